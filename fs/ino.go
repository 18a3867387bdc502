package fs

import (
	"hash/fnv"
)

// Inode numbers are deterministic: a hash of what the node is (its
// snapshot and path, or its WAL file), so that they are the same on every
// mount and `diff`, `cp -a` and `find -inum` see stable numbers. The root
// is always 1; 0 and ^0 are reserved by go-fuse and never produced.
//
// Nodes created in an instant mount's overlay get numbers from a counter
// persisted in the overlay journal, in their own range (overlayInoBase
// and up), so they are stable across remounts of the same scratch too.

// rootIno is FUSE's root node ID.
const rootIno = 1

// overlayInoBase starts the range of inode numbers given to nodes created
// in an overlay. Hashed numbers are folded below it.
const overlayInoBase = uint64(1) << 63

// hashIno returns the inode number for a node identified by the parts.
func hashIno(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	ino := h.Sum64() &^ overlayInoBase
	if ino <= rootIno {
		ino += 2
	}
	return ino
}

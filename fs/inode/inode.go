// Package inode says how pgvault's mounts present a node to the kernel,
// the same way in browse and instant mode: its inode number and the mode
// bits of a snapshot entry.
//
// Inode numbers are deterministic: a hash of what the node is (its
// snapshot and path, or its WAL file), so that they are the same on every
// mount and `diff`, `cp -a` and `find -inum` see stable numbers. The root
// is always Root; 0 and ^0 are reserved by go-fuse and never produced.
//
// Nodes created in an instant mount's overlay get numbers from a counter
// persisted in the overlay journal, in their own range (OverlayBase and
// up), so they are stable across remounts of the same scratch too.
package inode

import (
	"hash/fnv"
	"os"
	"syscall"
)

// Root is FUSE's root node ID.
const Root = 1

// OverlayBase starts the range of inode numbers given to nodes created in
// an overlay. Hashed numbers are folded below it.
const OverlayBase = uint64(1) << 63

// Hash returns the inode number for a node identified by the parts.
func Hash(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	ino := h.Sum64() &^ OverlayBase
	if ino <= Root {
		ino += 2
	}
	return ino
}

// ModeBits returns the permission bits of a snapshot entry's mode with
// setuid, setgid and sticky as stat(2) reports them (without the type).
func ModeBits(m os.FileMode) uint32 {
	x := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		x |= syscall.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		x |= syscall.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		x |= syscall.S_ISVTX
	}
	return x
}

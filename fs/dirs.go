package fs

import (
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// withDots puts "." and ".." in front of a directory listing, as readdir
// on a disk filesystem returns them (go-fuse does not add them).
func withDots(self *gofs.Inode, ents []fuse.DirEntry) []fuse.DirEntry {
	ino := self.StableAttr().Ino
	parent := ino
	if _, p := self.Parent(); p != nil {
		parent = p.StableAttr().Ino
	}
	out := make([]fuse.DirEntry, 0, len(ents)+2)
	out = append(out, fuse.DirEntry{Name: ".", Ino: ino, Mode: syscall.S_IFDIR}, fuse.DirEntry{Name: "..", Ino: parent, Mode: syscall.S_IFDIR})
	return append(out, ents...)
}

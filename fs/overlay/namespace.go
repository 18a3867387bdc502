package overlay

import (
	"context"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The namespace operations. Each one that changes something validates,
// appends one journal record (one write(2): after a kill -9 of the
// process it is there whole or not at all) and applies it; it is durable
// once Fsync (of any node) or Sync returns. They are safe for concurrent
// use: an operation that finds the namespace changed under it between
// loading a folder and taking the lock fails with ENOENT, as the kernel
// expects of a filesystem that others change.
//
// Errors are syscall.Errno values the caller may hand to the kernel
// (ENOENT: no such entry, also matched by errors.Is(err, fs.ErrNotExist);
// EEXIST, ENOTDIR, EISDIR, ENOTEMPTY, EINVAL), or a repository read
// failure loading a folder's snapshot entries, or a journal write failure,
// both wrapped with what was being done.

// Lookup returns the entry name of directory d.
func (ov *Overlay) Lookup(ctx context.Context, d *Node, name string) (*Node, error) {
	if d.kind != KindDir {
		return nil, syscall.ENOTDIR
	}
	if err := ov.ensureLoaded(ctx, d); err != nil {
		return nil, err
	}
	ov.mu.Lock()
	defer ov.mu.Unlock()
	c := d.children[name]
	if c == nil {
		return nil, syscall.ENOENT
	}
	return c, nil
}

// DirEntry is one entry of a listing.
type DirEntry struct {
	Name string
	Ino  uint64
	Kind Kind
}

// List returns a directory's entries in name order.
func (ov *Overlay) List(ctx context.Context, d *Node) ([]DirEntry, error) {
	if d.kind != KindDir {
		return nil, syscall.ENOTDIR
	}
	if err := ov.ensureLoaded(ctx, d); err != nil {
		return nil, err
	}
	ov.mu.Lock()
	out := make([]DirEntry, 0, len(d.children))
	for name, c := range d.children {
		out = append(out, DirEntry{Name: name, Ino: c.ino, Kind: c.kind})
	}
	ov.mu.Unlock()
	slices.SortFunc(out, func(a, b DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Create makes a new file, directory or symbolic link (to target) called
// name in d, with the permission bits of mode, owned by owner. A file
// is created empty and held whole in the overlay.
func (ov *Overlay) Create(ctx context.Context, d *Node, name string, kind Kind, mode uint32, owner Owner, target string) (*Node, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if d.kind != KindDir {
		return nil, syscall.ENOTDIR
	}
	if err := ov.ensureLoaded(ctx, d); err != nil {
		return nil, err
	}
	ov.mu.Lock()
	defer ov.mu.Unlock()
	if d.removed {
		return nil, syscall.ENOENT
	}
	if d.children[name] != nil {
		return nil, syscall.EEXIST
	}
	ino := ov.nextIno
	r := &record{Kind: recCreate, Parent: d.ref(), Name: name, Node: nodeRef{Ino: ino}, Type: kind,
		Mode: mode & 0o7777, UID: owner.UID, GID: owner.GID, MTime: ov.now().UnixNano(), Target: target}
	if err := ov.commitLocked(ctx, r); err != nil {
		return nil, err
	}
	return d.children[name], nil
}

func validName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > 255 || strings.ContainsAny(name, "/\x00") {
		return syscall.EINVAL
	}
	return nil
}

// Remove unlinks a file or symbolic link (dir false) or removes an empty
// directory (dir true). A removed file keeps working for those who have
// it open; its upper file goes once the last of them released it and the
// removal is durable.
func (ov *Overlay) Remove(ctx context.Context, d *Node, name string, dir bool) error {
	c, err := ov.Lookup(ctx, d, name)
	if err != nil {
		return err
	}
	if c.kind == KindDir {
		if !dir {
			return syscall.EISDIR
		}
		if err := ov.ensureLoaded(ctx, c); err != nil {
			return err
		}
	} else if dir {
		return syscall.ENOTDIR
	}
	ov.mu.Lock()
	defer ov.mu.Unlock()
	if d.children[name] != c {
		return syscall.ENOENT // changed meanwhile
	}
	if c.kind == KindDir && len(c.children) > 0 {
		return syscall.ENOTEMPTY
	}
	return ov.commitLocked(ctx, &record{Kind: recRemove, Parent: d.ref(), Name: name})
}

// Rename moves an entry, replacing what is at the destination unless
// flags forbid it (RENAME_NOREPLACE) or ask for an exchange
// (RENAME_EXCHANGE); as rename(2), it is atomic: a crash leaves the old
// or the new state. The node keeps its inode number.
func (ov *Overlay) Rename(ctx context.Context, from *Node, name string, to *Node, newName string, flags uint32) error {
	if err := validName(newName); err != nil {
		return err
	}
	if flags&^uint32(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL
	}
	src, err := ov.Lookup(ctx, from, name)
	if err != nil {
		return err
	}
	if to.kind != KindDir {
		return syscall.ENOTDIR
	}
	if err := ov.ensureLoaded(ctx, to); err != nil {
		return err
	}
	ov.mu.Lock()
	dst := to.children[newName]
	ov.mu.Unlock()
	if dst != nil && dst.kind == KindDir {
		if err := ov.ensureLoaded(ctx, dst); err != nil {
			return err
		}
	}
	ov.mu.Lock()
	defer ov.mu.Unlock()
	if from.children[name] != src || to.children[newName] != dst || to.removed {
		return syscall.ENOENT // changed meanwhile; the caller retries
	}
	if dst == src {
		return nil
	}
	// A directory cannot move below itself.
	if src.kind == KindDir {
		for p := to; p != nil; p = p.parent {
			if p == src {
				return syscall.EINVAL
			}
		}
	}
	switch {
	case flags&unix.RENAME_EXCHANGE != 0:
		if dst == nil {
			return syscall.ENOENT
		}
		if dst.kind == KindDir {
			for p := from; p != nil; p = p.parent {
				if p == dst {
					return syscall.EINVAL
				}
			}
		}
	case dst != nil && flags&unix.RENAME_NOREPLACE != 0:
		return syscall.EEXIST
	case dst != nil && dst.kind == KindDir && src.kind != KindDir:
		return syscall.EISDIR
	case dst != nil && dst.kind != KindDir && src.kind == KindDir:
		return syscall.ENOTDIR
	case dst != nil && dst.kind == KindDir && len(dst.children) > 0:
		return syscall.ENOTEMPTY
	}
	return ov.commitLocked(ctx, &record{Kind: recRename, Parent: from.ref(), Name: name, NewParent: to.ref(), NewName: newName, Flags: flags})
}

// AttrChange says which attributes Setattr changes: those not nil.
type AttrChange struct {
	Mode     *uint32
	UID, GID *uint32
	Size     *int64
	MTime    *time.Time
}

// Setattr changes attributes; a size change truncates or extends a file
// (first, as its own journal record, then the rest as one record).
func (ov *Overlay) Setattr(ctx context.Context, n *Node, s AttrChange) error {
	if s.Size != nil {
		if n.kind == KindDir {
			return syscall.EISDIR
		}
		if n.kind != KindFile {
			return syscall.EINVAL
		}
		if *s.Size < 0 {
			return syscall.EINVAL
		}
		if err := ov.truncate(ctx, n, *s.Size); err != nil {
			return err
		}
	}
	r := &record{Kind: recSetattr, Node: n.ref()}
	if s.Mode != nil {
		r.Valid |= attrMode
		r.Mode = *s.Mode & 0o7777
	}
	if s.UID != nil {
		r.Valid |= attrUID
		r.UID = *s.UID
	}
	if s.GID != nil {
		r.Valid |= attrGID
		r.GID = *s.GID
	}
	if s.MTime != nil {
		r.Valid |= attrMTime
		r.MTime = s.MTime.UnixNano()
	}
	if r.Valid == 0 {
		return nil
	}
	if s.MTime != nil && n.kind == KindFile {
		// The upper file of a file held whole in the overlay carries its
		// modification time across remounts.
		n.file.setUpperTime(*s.MTime)
	}
	ov.mu.Lock()
	defer ov.mu.Unlock()
	return ov.commitLocked(ctx, r)
}

// Readlink returns a symbolic link's target (EINVAL for anything else).
func (ov *Overlay) Readlink(n *Node) (string, error) {
	if n.kind != KindSymlink {
		return "", syscall.EINVAL
	}
	ov.mu.Lock()
	defer ov.mu.Unlock()
	return n.target, nil
}

// Opened and Released count open handles of n (passthrough: served by
// kernel passthrough, see OpenPassthrough); every Opened needs its
// Released. A removed file's upper file goes with its last handle.
func (ov *Overlay) Opened(n *Node, passthrough bool) {
	ov.mu.Lock()
	n.opens++
	if passthrough {
		n.ptOpens++
	}
	ov.mu.Unlock()
}

// Released ends a handle counted by Opened or OpenPassthrough.
func (ov *Overlay) Released(n *Node, passthrough bool) {
	ov.mu.Lock()
	defer ov.mu.Unlock()
	n.opens--
	if passthrough {
		n.ptOpens--
	}
	if n.opens == 0 && n.removed {
		delete(ov.nodes, n.ino)
		if n.kind == KindFile {
			ov.doomed = append(ov.doomed, n)
		}
	}
}

// OpenPassthrough opens file n for kernel passthrough if it is held whole
// in the overlay and no other kind of handle is open (the kernel refuses
// to mix cached and passthrough opens of one inode): it counts the open
// and returns the upper file's descriptor, which stays valid until the
// matching Released(n, true). With ok false nothing was counted: open the
// file normally (Opened(n, false)).
func (ov *Overlay) OpenPassthrough(n *Node) (fd int, ok bool) {
	if n.kind != KindFile {
		return -1, false
	}
	f := n.file
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.local || ov.openUpperLocked(n) != nil {
		return -1, false
	}
	ov.mu.Lock()
	defer ov.mu.Unlock()
	if n.opens != n.ptOpens {
		return -1, false
	}
	n.opens++
	n.ptOpens++
	return int(f.upper.Fd()), true
}

// OpenState says how file n may be opened: local if the overlay holds
// all of it (kernel passthrough may serve it), modified if it changed
// during this mount (pages the kernel cached at an earlier open may be
// stale; a new mount starts with an empty page cache, so changes of
// earlier sessions do not count).
func (ov *Overlay) OpenState(n *Node) (local, modified bool) {
	if n.kind != KindFile {
		return false, false
	}
	f := n.file
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.local, f.modified
}

package overlay

import (
	"context"
	"fmt"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// resolveLocked finds the node a record names; nil if it no longer
// exists. A snapshot node nothing has loaded yet is found by loading its
// original parent's entries.
func (ov *Overlay) resolveLocked(ctx context.Context, ref nodeRef) (*Node, error) {
	if n := ov.nodes[ref.Ino]; n != nil {
		return n, nil
	}
	if !ref.Base || ref.Path == "" {
		return nil, nil
	}
	dir, _ := path.Split(ref.Path)
	dir = strings.TrimRight(dir, "/")
	if baseIno(ref.Path) != ref.Ino {
		return nil, fmt.Errorf("%w: node %d does not match snapshot path %q", ErrJournalCorrupt, ref.Ino, ref.Path)
	}
	parent, err := ov.resolveLocked(ctx, nodeRef{Ino: baseIno(dir), Base: true, Path: dir})
	if err != nil || parent == nil || parent.kind != KindDir {
		return nil, err
	}
	if err := ov.loadLocked(ctx, parent); err != nil {
		return nil, err
	}
	return ov.nodes[ref.Ino], nil
}

// mustResolveDirLocked is resolveLocked for a directory that must exist.
func (ov *Overlay) mustResolveDirLocked(ctx context.Context, ref nodeRef) (*Node, error) {
	d, err := ov.resolveLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	if d == nil || d.kind != KindDir {
		return nil, fmt.Errorf("%w: directory %d (%q) does not exist", ErrJournalCorrupt, ref.Ino, ref.Path)
	}
	if err := ov.loadLocked(ctx, d); err != nil {
		return nil, err
	}
	return d, nil
}

// apply performs a record on the in-memory state. Live operations
// validate, append the record to the journal, then apply it; replay
// applies the journal's records in order: one code path, so a replay
// rebuilds exactly the state the live operations had built. Callers hold
// Overlay.mu, and the file's lock for records that change file state.
func (ov *Overlay) apply(ctx context.Context, r *record) error {
	switch r.Kind {
	case recCreate:
		d, err := ov.mustResolveDirLocked(ctx, r.Parent)
		if err != nil {
			return err
		}
		if d.children[r.Name] != nil {
			return fmt.Errorf("%w: create %q: it exists", ErrJournalCorrupt, r.Name)
		}
		if ov.nodes[r.Node.Ino] != nil {
			return fmt.Errorf("%w: create %q: inode %d is taken", ErrJournalCorrupt, r.Name, r.Node.Ino)
		}
		n := &Node{ino: r.Node.Ino, kind: r.Type, parent: d, name: r.Name, mode: r.Mode & 0o7777,
			uid: r.UID, gid: r.GID, ctime: time.Unix(0, r.MTime), target: r.Target}
		n.mtime.Store(r.MTime)
		switch r.Type {
		case KindDir:
			n.children = map[string]*Node{}
		case KindFile:
			n.file = &fileState{local: true}
		}
		d.children[r.Name] = n
		ov.nodes[n.ino] = n
		ov.nextIno = max(ov.nextIno, n.ino+1)
		ov.touchDirLocked(d, r.MTime)
	case recRemove:
		d, err := ov.mustResolveDirLocked(ctx, r.Parent)
		if err != nil {
			return err
		}
		c := d.children[r.Name]
		if c == nil {
			return fmt.Errorf("%w: remove %q: no such entry", ErrJournalCorrupt, r.Name)
		}
		ov.detachLocked(c)
		ov.touchDirLocked(d, ov.now().UnixNano())
	case recRename:
		from, err := ov.mustResolveDirLocked(ctx, r.Parent)
		if err != nil {
			return err
		}
		to, err := ov.mustResolveDirLocked(ctx, r.NewParent)
		if err != nil {
			return err
		}
		src := from.children[r.Name]
		if src == nil {
			return fmt.Errorf("%w: rename %q: no such entry", ErrJournalCorrupt, r.Name)
		}
		dst := to.children[r.NewName]
		if r.Flags&unix.RENAME_EXCHANGE != 0 {
			if dst == nil {
				return fmt.Errorf("%w: exchange with %q: no such entry", ErrJournalCorrupt, r.NewName)
			}
			from.children[r.Name], to.children[r.NewName] = dst, src
			dst.parent, dst.name = from, r.Name
		} else {
			if dst == src {
				return nil
			}
			if dst != nil {
				ov.detachLocked(dst)
			}
			delete(from.children, r.Name)
			to.children[r.NewName] = src
		}
		src.parent, src.name = to, r.NewName
		now := ov.now()
		src.ctime = now
		ov.touchDirLocked(from, now.UnixNano())
		ov.touchDirLocked(to, now.UnixNano())
	case recSetattr:
		n, err := ov.resolveLocked(ctx, r.Node)
		if err != nil || n == nil {
			return err // a node removed since: nothing to do
		}
		if r.Valid&attrMode != 0 {
			n.mode = r.Mode & 0o7777
		}
		if r.Valid&attrUID != 0 {
			n.uid = r.UID
		}
		if r.Valid&attrGID != 0 {
			n.gid = r.GID
		}
		if r.Valid&attrMTime != 0 {
			n.mtime.Store(r.MTime)
		}
		if r.Valid&attrSize != 0 {
			if n.kind != KindFile {
				return fmt.Errorf("%w: size change of a non-file", ErrJournalCorrupt)
			}
			n.file.truncateState(r.Size, ov.bs)
		}
		n.ctime = ov.now()
	case recData:
		n, err := ov.resolveLocked(ctx, r.Node)
		if err != nil || n == nil {
			return err
		}
		if n.kind != KindFile {
			return fmt.Errorf("%w: data record for a non-file", ErrJournalCorrupt)
		}
		f := n.file
		f.size = r.Size
		n.mtime.Store(r.MTime)
		if r.Flags&dataLocal != 0 {
			f.local, f.present, f.baseLimit = true, nil, 0
			break
		}
		if f.local {
			return fmt.Errorf("%w: block map for a file held whole in the overlay", ErrJournalCorrupt)
		}
		f.baseLimit = min(f.baseLimit, r.BaseLimit)
		if r.Flags&dataAbsolute != 0 {
			f.present = nil
		}
		for _, rg := range r.Ranges {
			f.present.setRange(int64(rg.First), int64(rg.Count))
		}
	case recClone:
		n, err := ov.resolveLocked(ctx, r.Node)
		if err != nil || n == nil {
			return err
		}
		if n.kind != KindFile || n.base != nil {
			return fmt.Errorf("%w: clone into a node that is not a created file", ErrJournalCorrupt)
		}
		f := n.file
		f.local, f.present, f.dirty, f.metaDirty = false, nil, nil, false
		f.size, f.baseLimit, f.modified = r.Size, r.Size, true
		f.baseMu.Lock()
		f.clone, f.base = &WALRef{Timeline: r.Timeline, Name: r.Name, Size: r.Size}, nil
		f.baseMu.Unlock()
		n.mtime.Store(r.MTime)
	default:
		return fmt.Errorf("%w: unknown record kind %d", ErrJournalCorrupt, r.Kind)
	}
	return nil
}

func (ov *Overlay) touchDirLocked(d *Node, ns int64) {
	d.mtime.Store(ns)
	d.ctime = time.Unix(0, ns)
}

// detachLocked takes a node out of the namespace. A file's upper file is
// removed once nobody has it open and the removal is durable.
func (ov *Overlay) detachLocked(n *Node) {
	if n.parent != nil {
		delete(n.parent.children, n.name)
	}
	n.parent, n.removed = nil, true
	if n.opens == 0 {
		delete(ov.nodes, n.ino)
		if n.kind == KindFile {
			ov.doomed = append(ov.doomed, n)
		}
	}
}

// commitLocked appends a record to the journal and applies it.
func (ov *Overlay) commitLocked(ctx context.Context, r *record) error {
	if err := ov.j.append(r); err != nil {
		return err
	}
	return ov.apply(ctx, r)
}

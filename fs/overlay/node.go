package overlay

import (
	"context"
	"encoding"
	"fmt"
	"path"
	"slices"
	"sync/atomic"
	"time"

	"github.com/pgvault/pgvault/fs/inode"
	"github.com/pgvault/pgvault/repo"
)

// Kind is the type of a node of the overlay. Its values are part of the
// journal format.
type Kind uint8

// Node kinds.
const (
	KindFile    Kind = 1
	KindDir     Kind = 2
	KindSymlink Kind = 3
)

// String names the kind: file, dir or symlink.
func (k Kind) String() string {
	switch k {
	case KindFile:
		return "file"
	case KindDir:
		return "dir"
	case KindSymlink:
		return "symlink"
	}
	return fmt.Sprintf("kind %d", uint8(k))
}

// MarshalText gives JSON reports the name of the kind.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

var (
	_ fmt.Stringer           = Kind(0)
	_ encoding.TextMarshaler = Kind(0)
)

// Node is a node of the overlay's namespace: an entry of the snapshot,
// or one created in the overlay. A *Node stays valid as long as the
// overlay, and names the same node whatever renames happen; a removed
// node still works for whoever has it open (Opened) until Released. Its
// state is read and changed only through the Overlay's methods.
type Node struct {
	ino      uint64
	kind     Kind
	base     *repo.Node // nil: created in the overlay
	basePath string

	// Guarded by Overlay.mu.
	parent      *Node
	name        string
	mode        uint32 // permission bits (07777)
	uid, gid    uint32
	ctime       time.Time
	target      string
	children    map[string]*Node // directories; nil until loaded from the snapshot
	baseEntries int              // directories: entries the snapshot's tree had when loaded
	opens       int
	ptOpens     int // opens served by kernel passthrough
	removed     bool

	mtime atomic.Int64 // Unix nanoseconds

	file *fileState // regular files
}

// Ino is the node's inode number: the hash of its snapshot path for an
// entry of the snapshot, from the overlay's persisted counter (at
// inode.OverlayBase and up) for a node created in the overlay.
func (n *Node) Ino() uint64 { return n.ino }

// Kind is the node's type; it never changes.
func (n *Node) Kind() Kind { return n.kind }

func upperName(ino uint64) string { return fmt.Sprintf("%016x", ino) }

// baseIno is the inode number of the snapshot entry at path p.
func baseIno(p string) uint64 {
	if p == "" {
		return inode.Root
	}
	return inode.Hash("base", p)
}

// joinPath joins a slash-separated path and a name; "" is the root.
func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func (n *Node) ref() nodeRef {
	if n.base != nil {
		return nodeRef{Ino: n.ino, Base: true, Path: n.basePath}
	}
	return nodeRef{Ino: n.ino}
}

// newBaseNode makes the overlay node of a snapshot entry.
func (ov *Overlay) newBaseNode(parent *Node, bn *repo.Node) *Node {
	p := joinPath(parent.basePath, bn.Name)
	node := *bn
	n := &Node{ino: baseIno(p), base: &node, basePath: p, parent: parent, name: bn.Name,
		mode: inode.ModeBits(bn.Mode), uid: ov.owner.UID, gid: ov.owner.GID,
		ctime: bn.ModTime, target: bn.Target}
	n.mtime.Store(bn.ModTime.UnixNano())
	switch bn.Type {
	case repo.NodeDir:
		n.kind = KindDir
	case repo.NodeSymlink:
		n.kind = KindSymlink
	default:
		n.kind = KindFile
		n.file = &fileState{size: bn.Size, baseLimit: bn.Size}
	}
	return n
}

// installChildrenLocked fills a snapshot directory's entries from its tree.
func (ov *Overlay) installChildrenLocked(d *Node, t *repo.Tree) {
	d.children = make(map[string]*Node, len(t.Nodes))
	d.baseEntries = len(t.Nodes)
	for i := range t.Nodes {
		c := ov.newBaseNode(d, &t.Nodes[i])
		d.children[c.name] = c
		ov.nodes[c.ino] = c
	}
}

// ensureLoaded loads a directory's snapshot entries if nothing has yet.
// It reads the repository without holding the lock.
func (ov *Overlay) ensureLoaded(ctx context.Context, d *Node) error {
	ov.mu.Lock()
	loaded := d.children != nil
	var subtree *repo.Node
	if !loaded {
		subtree = d.base
	}
	ov.mu.Unlock()
	if loaded {
		return nil
	}
	if subtree == nil || subtree.Subtree == nil {
		ov.mu.Lock()
		if d.children == nil {
			d.children = map[string]*Node{}
		}
		ov.mu.Unlock()
		return nil
	}
	t, err := ov.r.LoadTree(ctx, *subtree.Subtree)
	if err != nil {
		ov.noteReadError(err)
		return fmt.Errorf("directory %s: %w", d.basePath, err)
	}
	ov.mu.Lock()
	if d.children == nil {
		ov.installChildrenLocked(d, t)
	}
	ov.mu.Unlock()
	return nil
}

// loadLocked loads a directory during replay (holding the lock is fine:
// nothing else runs yet).
func (ov *Overlay) loadLocked(ctx context.Context, d *Node) error {
	if d.children != nil {
		return nil
	}
	if d.base == nil || d.base.Subtree == nil {
		d.children = map[string]*Node{}
		return nil
	}
	t, err := ov.r.LoadTree(ctx, *d.base.Subtree)
	if err != nil {
		return fmt.Errorf("directory %s: %w", d.basePath, err)
	}
	ov.installChildrenLocked(d, t)
	return nil
}

// pathOfLocked is the node's current path in the view, for messages.
func (ov *Overlay) pathOfLocked(n *Node) string {
	if n == ov.root {
		return "."
	}
	var parts []string
	for c := n; c != nil && c != ov.root; c = c.parent {
		parts = append(parts, c.name)
		if c.parent == nil {
			if c.removed {
				parts = append(parts, "(removed)")
			}
			break
		}
	}
	slices.Reverse(parts)
	return path.Join(parts...)
}

func (ov *Overlay) pathOf(n *Node) string {
	ov.mu.Lock()
	defer ov.mu.Unlock()
	return ov.pathOfLocked(n)
}

// Attr are a node's attributes, as stat(2) reports them.
type Attr struct {
	Ino      uint64
	Kind     Kind
	Mode     uint32 // permission bits
	UID, GID uint32
	Size     int64
	MTime    time.Time
	CTime    time.Time
	Nlink    uint32 // 0 once removed
}

// Attr returns n's attributes now. A file held whole in the overlay
// takes its size and modification time from its upper file, which kernel
// passthrough writes change without telling the overlay.
func (ov *Overlay) Attr(n *Node) Attr {
	ov.mu.Lock()
	a := Attr{Ino: n.ino, Kind: n.kind, Mode: n.mode, UID: n.uid, GID: n.gid, CTime: n.ctime, Nlink: 1}
	if n.removed {
		a.Nlink = 0
	}
	target := n.target
	ov.mu.Unlock()
	a.MTime = time.Unix(0, n.mtime.Load())
	switch n.kind {
	case KindFile:
		f := n.file
		f.mu.RLock()
		if fi, ok := f.upperStatLocked(); ok {
			a.Size, a.MTime = fi.Size(), fi.ModTime()
		} else {
			a.Size = f.size
		}
		f.mu.RUnlock()
	case KindDir:
		a.Size = 4096
		if a.Nlink == 1 {
			a.Nlink = 2
		}
	case KindSymlink:
		a.Size = int64(len(target))
	}
	return a
}

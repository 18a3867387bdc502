package fs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgvault/pgvault/repo"
)

// DefaultBlockSize is the unit of copy-on-write tracking: PostgreSQL's
// page size, so a page write never copies more than itself.
const DefaultBlockSize = 8192

// Files in the scratch folder.
const (
	scratchMeta    = "overlay.json"
	scratchJournal = "journal"
	scratchLock    = "lock"
	scratchUpper   = "upper"
)

// Sentinel errors of OpenOverlay.
var (
	// ErrScratchInUse: another mount holds the scratch folder.
	ErrScratchInUse = errors.New("scratch folder is in use by another mount")
	// ErrScratchMismatch: the scratch folder holds the overlay of another
	// snapshot.
	ErrScratchMismatch = errors.New("scratch folder holds the overlay of another backup")
)

// Owner is a user and group ID.
type Owner struct{ UID, GID uint32 }

// OverlayOptions configure OpenOverlay.
type OverlayOptions struct {
	// Scratch is the folder holding the overlay; created if missing.
	Scratch string
	// Owner is who the snapshot's files appear to belong to (PostgreSQL
	// refuses a data directory it does not own).
	Owner Owner
	// BlockSize is the unit of copy-on-write tracking; 0 means
	// DefaultBlockSize. A scratch folder keeps the size it was made with.
	BlockSize int
	// Prefetcher, if set, reads ahead of sequential readers of snapshot
	// content.
	Prefetcher *Prefetcher
	// CopyOnRead caps the bytes of snapshot content that reads copy into
	// the scratch folder (see copyonread.go); 0 turns it off.
	CopyOnRead int64
	// Logger receives warnings and read errors; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// overlayMeta is scratch/overlay.json: which snapshot the overlay
// belongs to, and its block size.
type overlayMeta struct {
	Version   int       `json:"version"`
	Snapshot  string    `json:"snapshot"`
	BlockSize int       `json:"block_size"`
	Created   time.Time `json:"created"`
}

// Overlay is a writable view of one snapshot: the snapshot's tree with
// every change kept in a scratch folder. Its methods are safe for
// concurrent use.
//
// Locks, in the order they may be taken: a file's fileState.mu, then
// Overlay.mu (namespace and attributes), then the journal's. Nothing
// holds Overlay.mu while reading from the repository.
type Overlay struct {
	r        *repo.Repository
	snap     *repo.Snapshot
	dir      string
	upperDir string
	owner    Owner
	bs       int64
	pf       *Prefetcher
	log      *slog.Logger
	now      func() time.Time
	lock     *os.File
	fresh    bool

	mu      sync.Mutex
	nodes   map[uint64]*onode // every node reachable in the namespace (plus open removed ones until released)
	root    *onode
	nextIno uint64
	doomed  []*onode // removed files whose upper file goes at the next journal sync

	j   *journal
	cor *copyOnRead

	baseRead    atomic.Int64 // bytes read from the snapshot
	upperRead   atomic.Int64
	written     atomic.Int64
	readErrors  atomic.Int64
	firstErrMu  sync.Mutex
	firstErr    string
	closeOnce   sync.Once
	compactions atomic.Int64

	recovering     chan struct{} // closed at the first request to the WAL view
	recoveringOnce sync.Once

	// noClones (guarded by mu) is set when hydration has copied the backup's
	// files: a hydrated overlay must not depend on the repository, so WAL
	// copies are real copies from then on.
	noClones bool

	walEntries walEntries // the WAL view's catalogue lookups
}

// onode is a node of the overlay namespace.
type onode struct {
	ino      uint64
	kind     nodeKind
	base     *repo.Node // nil: created in the overlay
	basePath string

	// Guarded by Overlay.mu.
	parent   *onode
	name     string
	mode     uint32 // permission bits (07777)
	uid, gid uint32
	ctime    time.Time
	target   string
	children map[string]*onode // directories; nil until loaded from the snapshot
	opens    int
	ptOpens  int // opens served by kernel passthrough
	removed  bool

	mtime atomic.Int64 // Unix nanoseconds

	file *fileState // regular files
}

// OpenOverlay opens the overlay of snapshot snap in opts.Scratch, creating
// it if the folder is new, and replays its journal. The scratch folder is
// locked until Close. A folder made for another snapshot is refused
// (ErrScratchMismatch), as is one another mount holds (ErrScratchInUse).
func OpenOverlay(ctx context.Context, r *repo.Repository, snap *repo.Snapshot, opts OverlayOptions) (*Overlay, error) {
	if opts.Scratch == "" {
		return nil, errors.New("no scratch folder given")
	}
	dir, err := filepath.Abs(opts.Scratch)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, scratchUpper), 0o700); err != nil {
		return nil, fmt.Errorf("create scratch folder %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, scratchLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("scratch folder %s: %w", dir, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (stop the other pgvault mount or use another --scratch)", ErrScratchInUse, dir)
		}
		return nil, fmt.Errorf("lock scratch folder %s: %w", dir, err)
	}
	ov := &Overlay{
		r: r, snap: snap, dir: dir, upperDir: filepath.Join(dir, scratchUpper), owner: opts.Owner,
		pf: opts.Prefetcher, log: opts.Logger, now: opts.Now, lock: lock,
		nodes: map[uint64]*onode{}, nextIno: overlayInoBase, cor: newCopyOnRead(opts.CopyOnRead),
		recovering: make(chan struct{}),
	}
	if ov.log == nil {
		ov.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if ov.now == nil {
		ov.now = time.Now
	}
	if err := ov.open(ctx, opts); err != nil {
		lock.Close()
		return nil, err
	}
	return ov, nil
}

func (ov *Overlay) open(ctx context.Context, opts OverlayOptions) error {
	metaPath := filepath.Join(ov.dir, scratchMeta)
	data, err := os.ReadFile(metaPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if _, err := os.Stat(filepath.Join(ov.dir, scratchJournal)); err == nil {
			return fmt.Errorf("scratch folder %s has a journal but no %s: it is damaged; use a new --scratch", ov.dir, scratchMeta)
		}
		bs := opts.BlockSize
		if bs == 0 {
			bs = DefaultBlockSize
		}
		if bs < 512 || bs&(bs-1) != 0 {
			return fmt.Errorf("overlay block size %d: want a power of two of 512 or more", bs)
		}
		m := overlayMeta{Version: 1, Snapshot: ov.snap.ID, BlockSize: bs, Created: ov.now().UTC()}
		b, _ := json.MarshalIndent(m, "", "  ")
		if err := writeFileSync(metaPath, append(b, '\n')); err != nil {
			return fmt.Errorf("create %s: %w", metaPath, err)
		}
		ov.bs, ov.fresh = int64(bs), true
	case err != nil:
		return fmt.Errorf("read %s: %w", metaPath, err)
	default:
		var m overlayMeta
		if err := json.Unmarshal(data, &m); err != nil || m.Version != 1 || m.BlockSize < 512 || m.BlockSize&(m.BlockSize-1) != 0 {
			return fmt.Errorf("%s is not a pgvault overlay description (use a new --scratch)", metaPath)
		}
		if m.Snapshot != ov.snap.ID {
			return fmt.Errorf("%w: %s belongs to backup %.8s, not %s (use the same --backup or a new --scratch)", ErrScratchMismatch, ov.dir, m.Snapshot, ov.snap.ShortID())
		}
		ov.bs = int64(m.BlockSize)
	}

	root := ov.snap.RootNode
	ov.root = &onode{ino: rootIno, kind: kindDir, base: &root, mode: 0o700, uid: ov.owner.UID, gid: ov.owner.GID, ctime: root.ModTime}
	ov.root.mtime.Store(root.ModTime.UnixNano())
	ov.nodes[rootIno] = ov.root

	j, recs, err := openJournal(filepath.Join(ov.dir, scratchJournal))
	if err != nil {
		return err
	}
	ov.j = j
	for i := range recs {
		if err := ov.apply(ctx, &recs[i]); err != nil {
			j.close()
			return fmt.Errorf("replay overlay journal %s, record %d: %w (the scratch folder is damaged; use a new --scratch)", j.path, i+1, err)
		}
	}
	if err := ov.afterReplay(); err != nil {
		j.close()
		return err
	}
	if j.data > 64 {
		if err := ov.Compact(ctx); err != nil {
			j.close()
			return err
		}
	}
	return nil
}

// afterReplay opens the upper files the journal describes, cuts them to
// their file's size (bytes past the end may be left over from writes that
// were never synced) and removes upper files of nodes that no longer
// exist.
func (ov *Overlay) afterReplay() error {
	live := map[string]bool{}
	for _, n := range ov.nodes {
		if n.kind != kindFile {
			continue
		}
		f := n.file
		name := upperName(n.ino)
		p := filepath.Join(ov.upperDir, name)
		fi, err := os.Stat(p)
		exists := err == nil
		switch {
		case f.local:
			live[name] = true
			if exists {
				f.size = fi.Size()
				n.mtime.Store(fi.ModTime().UnixNano())
				if err := ov.openUpperLocked(n); err != nil {
					return err
				}
			} else if n.base != nil {
				return fmt.Errorf("overlay upper file %s of %s is missing: the scratch folder was damaged (use a new --scratch)", p, ov.pathOfLocked(n))
			} else {
				f.size = 0
			}
		case !f.present.empty():
			if !exists {
				return fmt.Errorf("overlay upper file %s of %s is missing: the scratch folder was damaged (use a new --scratch)", p, ov.pathOfLocked(n))
			}
			live[name] = true
			if fi.Size() > f.size {
				if err := os.Truncate(p, f.size); err != nil {
					return fmt.Errorf("overlay: %w", err)
				}
			}
			if err := ov.openUpperLocked(n); err != nil {
				return err
			}
		}
	}
	ents, err := os.ReadDir(ov.upperDir)
	if err != nil {
		return fmt.Errorf("overlay: %w", err)
	}
	for _, e := range ents {
		if !live[e.Name()] {
			os.Remove(filepath.Join(ov.upperDir, e.Name()))
		}
	}
	return nil
}

// Recovering returns a channel that is closed when PostgreSQL first asks
// the mount's WAL view (WALDirName) for a file: its restore_command runs,
// so the server has started and is in archive recovery.
func (ov *Overlay) Recovering() <-chan struct{} { return ov.recovering }

func (ov *Overlay) noteRecovering() { ov.recoveringOnce.Do(func() { close(ov.recovering) }) }

// Fresh reports whether the scratch folder was new (nothing to replay):
// the caller then prepares the data directory (recovery configuration).
func (ov *Overlay) Fresh() bool { return ov.fresh }

// BlockSize is the overlay's unit of copy-on-write tracking.
func (ov *Overlay) BlockSize() int64 { return ov.bs }

// Snapshot is the snapshot the overlay shows.
func (ov *Overlay) Snapshot() *repo.Snapshot { return ov.snap }

// Scratch is the overlay's folder.
func (ov *Overlay) Scratch() string { return ov.dir }

func upperName(ino uint64) string { return fmt.Sprintf("%016x", ino) }

// baseIno is the inode number of the snapshot entry at path p.
func baseIno(p string) uint64 {
	if p == "" {
		return rootIno
	}
	return hashIno("base", p)
}

func (n *onode) ref() nodeRef {
	if n.base != nil {
		return nodeRef{Ino: n.ino, Base: true, Path: n.basePath}
	}
	return nodeRef{Ino: n.ino}
}

// newBaseNode makes the overlay node of a snapshot entry.
func (ov *Overlay) newBaseNode(parent *onode, bn *repo.Node) *onode {
	p := bn.Name
	if parent.basePath != "" {
		p = parent.basePath + "/" + bn.Name
	}
	node := *bn
	n := &onode{ino: baseIno(p), base: &node, basePath: p, parent: parent, name: bn.Name,
		mode: uint32(bn.Mode.Perm()) | modeExtra(bn.Mode), uid: ov.owner.UID, gid: ov.owner.GID,
		ctime: bn.ModTime, target: bn.Target}
	n.mtime.Store(bn.ModTime.UnixNano())
	switch bn.Type {
	case repo.NodeDir:
		n.kind = kindDir
	case repo.NodeSymlink:
		n.kind = kindSymlink
	default:
		n.kind = kindFile
		n.file = &fileState{size: bn.Size, baseLimit: bn.Size}
	}
	return n
}

func modeExtra(m os.FileMode) uint32 {
	var x uint32
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

// installChildrenLocked fills a snapshot directory's entries from its tree.
func (ov *Overlay) installChildrenLocked(d *onode, t *repo.Tree) {
	d.children = make(map[string]*onode, len(t.Nodes))
	for i := range t.Nodes {
		c := ov.newBaseNode(d, &t.Nodes[i])
		d.children[c.name] = c
		ov.nodes[c.ino] = c
	}
}

// ensureLoaded loads a directory's snapshot entries if nothing has yet.
// It reads the repository without holding the lock.
func (ov *Overlay) ensureLoaded(ctx context.Context, d *onode) error {
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
			d.children = map[string]*onode{}
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
func (ov *Overlay) loadLocked(ctx context.Context, d *onode) error {
	if d.children != nil {
		return nil
	}
	if d.base == nil || d.base.Subtree == nil {
		d.children = map[string]*onode{}
		return nil
	}
	t, err := ov.r.LoadTree(ctx, *d.base.Subtree)
	if err != nil {
		return fmt.Errorf("directory %s: %w", d.basePath, err)
	}
	ov.installChildrenLocked(d, t)
	return nil
}

// resolveLocked finds the node a record names; nil if it no longer
// exists. A snapshot node nothing has loaded yet is found by loading its
// original parent's entries.
func (ov *Overlay) resolveLocked(ctx context.Context, ref nodeRef) (*onode, error) {
	if n := ov.nodes[ref.Ino]; n != nil {
		return n, nil
	}
	if !ref.Base || ref.Path == "" {
		return nil, nil
	}
	dir, _ := path.Split(ref.Path)
	dir = trimSlash(dir)
	if baseIno(ref.Path) != ref.Ino {
		return nil, fmt.Errorf("%w: node %d does not match snapshot path %q", ErrJournalCorrupt, ref.Ino, ref.Path)
	}
	parent, err := ov.resolveLocked(ctx, nodeRef{Ino: baseIno(dir), Base: true, Path: dir})
	if err != nil || parent == nil || parent.kind != kindDir {
		return nil, err
	}
	if err := ov.loadLocked(ctx, parent); err != nil {
		return nil, err
	}
	return ov.nodes[ref.Ino], nil
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// mustResolveDirLocked is resolveLocked for a directory that must exist.
func (ov *Overlay) mustResolveDirLocked(ctx context.Context, ref nodeRef) (*onode, error) {
	d, err := ov.resolveLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	if d == nil || d.kind != kindDir {
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
		n := &onode{ino: r.Node.Ino, kind: r.Type, parent: d, name: r.Name, mode: r.Mode & 0o7777,
			uid: r.UID, gid: r.GID, ctime: time.Unix(0, r.MTime), target: r.Target}
		n.mtime.Store(r.MTime)
		switch r.Type {
		case kindDir:
			n.children = map[string]*onode{}
		case kindFile:
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
			if n.kind != kindFile {
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
		if n.kind != kindFile {
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
		if n.kind != kindFile || n.base != nil {
			return fmt.Errorf("%w: clone into a node that is not a created file", ErrJournalCorrupt)
		}
		f := n.file
		f.local, f.present, f.dirty, f.metaDirty = false, nil, nil, false
		f.size, f.baseLimit, f.modified = r.Size, r.Size, true
		f.baseMu.Lock()
		f.clone, f.base = &walClone{tli: r.Timeline, name: r.Name, size: r.Size}, nil
		f.baseMu.Unlock()
		n.mtime.Store(r.MTime)
	default:
		return fmt.Errorf("%w: unknown record kind %d", ErrJournalCorrupt, r.Kind)
	}
	return nil
}

func (ov *Overlay) touchDirLocked(d *onode, ns int64) {
	d.mtime.Store(ns)
	d.ctime = time.Unix(0, ns)
}

// detachLocked takes a node out of the namespace. A file's upper file is
// removed once nobody has it open and the removal is durable.
func (ov *Overlay) detachLocked(n *onode) {
	if n.parent != nil {
		delete(n.parent.children, n.name)
	}
	n.parent, n.removed = nil, true
	if n.opens == 0 {
		delete(ov.nodes, n.ino)
		if n.kind == kindFile {
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

// pathOfLocked is the node's current path in the view, for messages.
func (ov *Overlay) pathOfLocked(n *onode) string {
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
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return path.Join(parts...)
}

func (ov *Overlay) pathOf(n *onode) string {
	ov.mu.Lock()
	defer ov.mu.Unlock()
	return ov.pathOfLocked(n)
}

// nodeAttrs are a node's attributes.
type nodeAttrs struct {
	Ino      uint64
	Kind     nodeKind
	Mode     uint32 // permission bits
	UID, GID uint32
	Size     int64
	MTime    time.Time
	CTime    time.Time
	Nlink    uint32
}

func (ov *Overlay) attr(n *onode) nodeAttrs {
	ov.mu.Lock()
	a := nodeAttrs{Ino: n.ino, Kind: n.kind, Mode: n.mode, UID: n.uid, GID: n.gid, CTime: n.ctime, Nlink: 1}
	if n.removed {
		a.Nlink = 0
	}
	target := n.target
	ov.mu.Unlock()
	a.MTime = time.Unix(0, n.mtime.Load())
	switch n.kind {
	case kindFile:
		f := n.file
		f.mu.RLock()
		if fi, ok := f.upperStatLocked(); ok {
			a.Size, a.MTime = fi.Size(), fi.ModTime()
		} else {
			a.Size = f.size
		}
		f.mu.RUnlock()
	case kindDir:
		a.Size = 4096
		if a.Nlink == 1 {
			a.Nlink = 2
		}
	case kindSymlink:
		a.Size = int64(len(target))
	}
	return a
}

// lookup finds the entry name in directory d.
func (ov *Overlay) lookup(ctx context.Context, d *onode, name string) (*onode, error) {
	if d.kind != kindDir {
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

// dirEntry is one entry of a listing.
type dirEntry struct {
	Name string
	Ino  uint64
	Kind nodeKind
}

// list returns a directory's entries in name order.
func (ov *Overlay) list(ctx context.Context, d *onode) ([]dirEntry, error) {
	if d.kind != kindDir {
		return nil, syscall.ENOTDIR
	}
	if err := ov.ensureLoaded(ctx, d); err != nil {
		return nil, err
	}
	ov.mu.Lock()
	out := make([]dirEntry, 0, len(d.children))
	for name, c := range d.children {
		out = append(out, dirEntry{Name: name, Ino: c.ino, Kind: c.kind})
	}
	ov.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// create makes a new file, directory or symbolic link in d.
func (ov *Overlay) create(ctx context.Context, d *onode, name string, kind nodeKind, mode uint32, owner Owner, target string) (*onode, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if d.kind != kindDir {
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
	if name == "" || name == "." || name == ".." || len(name) > 255 {
		return syscall.EINVAL
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return syscall.EINVAL
		}
	}
	return nil
}

// remove unlinks a file or symbolic link (dir false) or removes an empty
// directory (dir true).
func (ov *Overlay) remove(ctx context.Context, d *onode, name string, dir bool) error {
	c, err := ov.lookup(ctx, d, name)
	if err != nil {
		return err
	}
	if c.kind == kindDir {
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
	if c.kind == kindDir && len(c.children) > 0 {
		return syscall.ENOTEMPTY
	}
	return ov.commitLocked(ctx, &record{Kind: recRemove, Parent: d.ref(), Name: name})
}

// rename moves an entry, replacing what is at the destination unless
// flags forbid it (RENAME_NOREPLACE) or ask for an exchange
// (RENAME_EXCHANGE).
func (ov *Overlay) rename(ctx context.Context, from *onode, name string, to *onode, newName string, flags uint32) error {
	if err := validName(newName); err != nil {
		return err
	}
	if flags&^uint32(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL
	}
	src, err := ov.lookup(ctx, from, name)
	if err != nil {
		return err
	}
	if to.kind != kindDir {
		return syscall.ENOTDIR
	}
	if err := ov.ensureLoaded(ctx, to); err != nil {
		return err
	}
	ov.mu.Lock()
	dst := to.children[newName]
	ov.mu.Unlock()
	if dst != nil && dst.kind == kindDir {
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
	if src.kind == kindDir {
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
		if dst.kind == kindDir {
			for p := from; p != nil; p = p.parent {
				if p == dst {
					return syscall.EINVAL
				}
			}
		}
	case dst != nil && flags&unix.RENAME_NOREPLACE != 0:
		return syscall.EEXIST
	case dst != nil && dst.kind == kindDir && src.kind != kindDir:
		return syscall.EISDIR
	case dst != nil && dst.kind != kindDir && src.kind == kindDir:
		return syscall.ENOTDIR
	case dst != nil && dst.kind == kindDir && len(dst.children) > 0:
		return syscall.ENOTEMPTY
	}
	return ov.commitLocked(ctx, &record{Kind: recRename, Parent: from.ref(), Name: name, NewParent: to.ref(), NewName: newName, Flags: flags})
}

// attrChange says which attributes setattr changes.
type attrChange struct {
	Mode     *uint32
	UID, GID *uint32
	Size     *int64
	MTime    *time.Time
}

// setattr changes attributes; a size change truncates or extends a file.
func (ov *Overlay) setattr(ctx context.Context, n *onode, s attrChange) error {
	if s.Size != nil {
		if n.kind == kindDir {
			return syscall.EISDIR
		}
		if n.kind != kindFile {
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
	if s.MTime != nil && n.kind == kindFile {
		// The upper file of a file held whole in the overlay carries its
		// modification time across remounts.
		n.file.setUpperTime(*s.MTime)
	}
	ov.mu.Lock()
	defer ov.mu.Unlock()
	return ov.commitLocked(ctx, r)
}

// readlink returns a symbolic link's target.
func (ov *Overlay) readlink(n *onode) (string, error) {
	if n.kind != kindSymlink {
		return "", syscall.EINVAL
	}
	ov.mu.Lock()
	defer ov.mu.Unlock()
	return n.target, nil
}

// opened and released count open handles; a removed file's upper file
// goes with its last handle.
func (ov *Overlay) opened(n *onode, passthrough bool) {
	ov.mu.Lock()
	n.opens++
	if passthrough {
		n.ptOpens++
	}
	ov.mu.Unlock()
}

func (ov *Overlay) released(n *onode, passthrough bool) {
	ov.mu.Lock()
	defer ov.mu.Unlock()
	n.opens--
	if passthrough {
		n.ptOpens--
	}
	if n.opens == 0 && n.removed {
		delete(ov.nodes, n.ino)
		if n.kind == kindFile {
			ov.doomed = append(ov.doomed, n)
		}
	}
}

// syncJournal makes every journal record durable, then removes the upper
// files of files whose removal is now durable.
func (ov *Overlay) syncJournal() error {
	if err := ov.j.sync(); err != nil {
		return err
	}
	ov.mu.Lock()
	doomed := ov.doomed
	ov.doomed = nil
	ov.mu.Unlock()
	for _, n := range doomed {
		n.file.dropUpper(filepath.Join(ov.upperDir, upperName(n.ino)))
	}
	return nil
}

// noteReadError counts a repository read failure and keeps the first.
func (ov *Overlay) noteReadError(err error) {
	if ov.readErrors.Add(1) == 1 {
		ov.firstErrMu.Lock()
		ov.firstErr = err.Error()
		ov.firstErrMu.Unlock()
	}
}

// Stats are an overlay's counters.
type Stats struct {
	BaseBytesRead  int64  `json:"base_bytes_read"`  // read from the snapshot (through the chunk cache)
	UpperBytesRead int64  `json:"upper_bytes_read"` // read from the scratch folder
	BytesWritten   int64  `json:"bytes_written"`
	ReadErrors     int64  `json:"read_errors"`
	FirstReadError string `json:"first_read_error,omitempty"`
	CopiedOnRead   int64  `json:"copied_on_read"` // snapshot bytes reads copied into the scratch folder
	JournalRecords int64  `json:"journal_records"`
	JournalBytes   int64  `json:"journal_bytes"`
	Compactions    int64  `json:"compactions"`
}

// Stats returns the counters so far.
func (ov *Overlay) Stats() Stats {
	ov.firstErrMu.Lock()
	first := ov.firstErr
	ov.firstErrMu.Unlock()
	ov.j.mu.Lock()
	recs, size := ov.j.records, ov.j.size
	ov.j.mu.Unlock()
	return Stats{BaseBytesRead: ov.baseRead.Load(), UpperBytesRead: ov.upperRead.Load(), BytesWritten: ov.written.Load(),
		CopiedOnRead: ov.cor.filled.Load(), ReadErrors: ov.readErrors.Load(), FirstReadError: first, JournalRecords: recs, JournalBytes: size,
		Compactions: ov.compactions.Load()}
}

// Sync makes every change durable: all upper files and the journal.
func (ov *Overlay) Sync(ctx context.Context) error {
	for _, n := range ov.fileNodes() {
		if err := ov.persist(ctx, n); err != nil {
			return err
		}
	}
	return ov.syncJournal()
}

func (ov *Overlay) fileNodes() []*onode {
	ov.mu.Lock()
	defer ov.mu.Unlock()
	out := make([]*onode, 0, len(ov.nodes))
	for _, n := range ov.nodes {
		if n.kind == kindFile {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ino < out[j].ino })
	return out
}

// Compact rewrites the journal: namespace records stay as they are, the
// block-map records of each file are replaced by one record of its
// current, synced state. Every file lock is held meanwhile, so no record
// can go to the old journal after it was read.
func (ov *Overlay) Compact(ctx context.Context) error {
	files := ov.fileNodes()
	for _, n := range files {
		n.file.mu.Lock()
	}
	defer func() {
		for _, n := range files {
			n.file.mu.Unlock()
		}
	}()
	for _, n := range files {
		if err := n.file.syncUpperLocked(); err != nil {
			return fmt.Errorf("compact overlay journal: %w", err)
		}
	}
	ov.mu.Lock()
	defer ov.mu.Unlock()
	old, err := ov.j.readAll()
	if err != nil {
		return err
	}
	recs := make([]record, 0, len(old))
	for _, r := range old {
		if r.Kind != recData {
			recs = append(recs, r)
		}
	}
	for _, n := range files {
		f := n.file
		if n.removed || (n.base == nil && f.local && !cloned(f)) {
			continue // created files are whole in the overlay from their create record on
		}
		if f.local {
			recs = append(recs, record{Kind: recData, Node: n.ref(), Flags: dataLocal, Size: f.sizeLocked(), MTime: n.mtime.Load()})
			continue
		}
		if bs := baseSize(n); f.present.empty() && f.size == bs && f.baseLimit == bs {
			continue
		}
		recs = append(recs, record{Kind: recData, Node: n.ref(), Flags: dataAbsolute, Size: f.size, BaseLimit: f.baseLimit,
			MTime: n.mtime.Load(), Ranges: f.present.ranges()})
	}
	if err := ov.j.replace(recs); err != nil {
		return err
	}
	for _, n := range files {
		n.file.dirty, n.file.metaDirty = nil, false
	}
	ov.compactions.Add(1)
	return nil
}

// cloned reports whether a clone record made f a copy of WAL (records
// after it describe the file as it is now).
func cloned(f *fileState) bool {
	f.baseMu.Lock()
	defer f.baseMu.Unlock()
	return f.clone != nil
}

// Close makes everything durable, compacts the journal and releases the
// scratch folder.
func (ov *Overlay) Close(ctx context.Context) error {
	var err error
	ov.closeOnce.Do(func() {
		ov.stopCopyOnRead()
		err = ov.Sync(ctx)
		if err == nil {
			err = ov.Compact(ctx)
		}
		for _, n := range ov.fileNodes() {
			n.file.closeUpper()
		}
		ov.mu.Lock()
		doomed := ov.doomed
		ov.doomed = nil
		ov.mu.Unlock()
		for _, n := range doomed {
			n.file.dropUpper(filepath.Join(ov.upperDir, upperName(n.ino)))
		}
		if cerr := ov.j.close(); err == nil {
			err = cerr
		}
		ov.lock.Close()
	})
	return err
}

// Path-based helpers for preparing a data directory (recovery settings)
// before it is mounted.

// walkPath finds the node at a slash-separated path of the view.
func (ov *Overlay) walkPath(ctx context.Context, p string) (*onode, error) {
	n := ov.root
	for _, name := range splitPath(p) {
		c, err := ov.lookup(ctx, n, name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		n = c
	}
	return n, nil
}

func splitPath(p string) []string {
	var out []string
	for _, e := range filepathSplit(path.Clean("/" + p)) {
		if e != "" {
			out = append(out, e)
		}
	}
	return out
}

func filepathSplit(p string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			out = append(out, p[start:i])
			start = i + 1
		}
	}
	return out
}

// Exists reports whether the path exists in the view.
func (ov *Overlay) Exists(ctx context.Context, p string) bool {
	_, err := ov.walkPath(ctx, p)
	return err == nil
}

// ReadFile returns the content of the file at path p of the view.
func (ov *Overlay) ReadFile(ctx context.Context, p string) ([]byte, error) {
	n, err := ov.walkPath(ctx, p)
	if err != nil {
		return nil, err
	}
	if n.kind != kindFile {
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	buf := make([]byte, n.file.currentSize())
	got, err := ov.read(ctx, n, buf, 0, nil)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return buf[:got], nil
}

// WriteFile replaces (or creates, with mode and owner) the file at path p
// with data. Call Sync to make it durable.
func (ov *Overlay) WriteFile(ctx context.Context, p string, data []byte, mode uint32, owner Owner) error {
	dir, name := path.Split(path.Clean("/" + p))
	d, err := ov.walkPath(ctx, dir)
	if err != nil {
		return err
	}
	n, err := ov.lookup(ctx, d, name)
	if errors.Is(err, syscall.ENOENT) {
		n, err = ov.create(ctx, d, name, kindFile, mode, owner, "")
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if n.kind != kindFile {
		return fmt.Errorf("%s is not a regular file", p)
	}
	if err := ov.truncate(ctx, n, 0); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if _, err := ov.write(ctx, n, data, 0); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// Remove removes the file, symbolic link or empty directory at path p;
// a missing path is not an error.
func (ov *Overlay) Remove(ctx context.Context, p string) error {
	dir, name := path.Split(path.Clean("/" + p))
	d, err := ov.walkPath(ctx, dir)
	if err != nil {
		return err
	}
	c, err := ov.lookup(ctx, d, name)
	if errors.Is(err, syscall.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := ov.remove(ctx, d, name, c.kind == kindDir); err != nil {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

package fs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/pgvault/pgvault/fs/chunkread"
	"github.com/pgvault/pgvault/fs/inode"
	"github.com/pgvault/pgvault/fs/overlay"
	"github.com/pgvault/pgvault/repo"
)

// BrowseOptions configure a browse mount.
type BrowseOptions struct {
	// Prefetcher reads ahead of sequential readers; nil reads on demand.
	Prefetcher *chunkread.Prefetcher
	// Logger receives read errors; nil discards them.
	Logger *slog.Logger
	// Refresh is how long the lists of snapshots and WAL files are reused
	// before the repository is asked again; 0 means 5 s.
	Refresh time.Duration
}

// dynamicTimeout is the entry and attribute timeout of what can change in
// a browse mount: the lists of snapshots and WAL files, the latest link
// and partial WAL segments. Everything else is immutable and gets the
// mount's long timeouts.
const dynamicTimeout = time.Second

// browser is the state shared by the nodes of a browse mount.
type browser struct {
	started time.Time // the mount's own folders carry this time
	r       *repo.Repository
	pf      *chunkread.Prefetcher
	log     *slog.Logger
	refresh time.Duration

	mu        sync.Mutex
	snaps     map[string]*repo.Snapshot // by directory name
	snapNames []string                  // oldest first
	snapsAt   time.Time
	wal       map[string][]string // timeline dir -> file names
	walAt     time.Time
	owner     overlay.Owner
	// latestLink is the latest link's inode once looked up.
	latestLink *gofs.Inode

	readErrors atomic.Int64
}

// NewBrowseRoot returns the root of a read-only browse mount of r:
// snapshots/<id>/, snapshots/latest and wal/<timeline>/<file>. It lists
// the snapshots once to fail early if the repository cannot be read.
func NewBrowseRoot(ctx context.Context, r *repo.Repository, opts BrowseOptions) (gofs.InodeEmbedder, error) {
	b := &browser{started: time.Now(), r: r, pf: opts.Prefetcher, log: opts.Logger, refresh: opts.Refresh}
	if b.log == nil {
		b.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if b.refresh == 0 {
		b.refresh = 5 * time.Second
	}
	if err := b.loadSnapshots(ctx, true); err != nil {
		return nil, err
	}
	return &browseRoot{b: b}, nil
}

// loadSnapshots rereads the snapshot list if it is older than refresh.
func (b *browser) loadSnapshots(ctx context.Context, force bool) error {
	b.mu.Lock()
	fresh := !force && time.Since(b.snapsAt) < b.refresh
	b.mu.Unlock()
	if fresh {
		return nil
	}
	snaps, err := b.r.Snapshots(ctx)
	if err != nil {
		return err
	}
	names := snapshotNames(snaps)
	m := make(map[string]*repo.Snapshot, len(snaps))
	order := make([]string, len(snaps))
	for i, s := range snaps {
		m[names[i]] = s
		order[i] = names[i]
	}
	b.mu.Lock()
	if link := b.latestLink; link != nil && len(order) > 0 && len(b.snapNames) > 0 && order[len(order)-1] != b.snapNames[len(b.snapNames)-1] {
		// The kernel caches link targets: tell it latest moved (not from
		// inside this request, which may hold kernel locks).
		go link.NotifyContent(0, 0)
	}
	b.snaps, b.snapNames, b.snapsAt = m, order, time.Now()
	if len(snaps) > 0 {
		root := snaps[len(snaps)-1].RootNode
		b.owner = overlay.Owner{UID: root.UID, GID: root.GID}
	}
	b.mu.Unlock()
	return nil
}

// snapshotNames gives each snapshot the shortest ID prefix of 8 or more
// hex digits that no other snapshot shares.
func snapshotNames(snaps []*repo.Snapshot) []string {
	out := make([]string, len(snaps))
	for i, s := range snaps {
		n := min(8, len(s.ID))
		for ; n < len(s.ID); n++ {
			unique := true
			for j, o := range snaps {
				if j != i && strings.HasPrefix(o.ID, s.ID[:n]) {
					unique = false
					break
				}
			}
			if unique {
				break
			}
		}
		out[i] = s.ID[:n]
	}
	return out
}

func (b *browser) readFailed(what string, off int64, err error) syscall.Errno {
	if errors.Is(err, context.Canceled) {
		return syscall.EINTR
	}
	b.readErrors.Add(1)
	b.log.Error("read from the repository failed", "file", what, "offset", off, "err", err)
	return toErrno(err)
}

func nodeAttr(n *repo.Node, out *fuse.Attr) {
	out.Mode = inode.ModeBits(n.Mode)
	switch n.Type {
	case repo.NodeDir:
		out.Mode |= syscall.S_IFDIR
		out.Nlink = 2
		out.Size = 4096
	case repo.NodeSymlink:
		out.Mode |= syscall.S_IFLNK
		out.Nlink = 1
		out.Size = uint64(len(n.Target))
	default:
		out.Mode |= syscall.S_IFREG
		out.Nlink = 1
		out.Size = uint64(n.Size)
	}
	out.Uid, out.Gid = n.UID, n.GID
	out.Blksize = 4096
	out.Blocks = (out.Size + 511) / 512
	t := n.ModTime
	out.SetTimes(&t, &t, &t)
}

func dirAttr(out *fuse.Attr, mode uint32, o overlay.Owner, t time.Time) {
	out.Mode = syscall.S_IFDIR | mode
	out.Nlink = 2
	out.Size = 4096
	out.Uid, out.Gid = o.UID, o.GID
	out.SetTimes(&t, &t, &t)
}

// browseRoot is the mount's root: snapshots/, tables/ and wal/.
type browseRoot struct {
	gofs.Inode
	b *browser
}

var (
	_ gofs.NodeLookuper  = (*browseRoot)(nil)
	_ gofs.NodeReaddirer = (*browseRoot)(nil)
	_ gofs.NodeGetattrer = (*browseRoot)(nil)
)

func (n *browseRoot) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, 0o555, overlay.Owner{}, n.b.started)
	return 0
}

func (n *browseRoot) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	switch name {
	case "snapshots":
		dirAttr(&out.Attr, 0o555, overlay.Owner{}, n.b.started)
		return n.NewInode(ctx, &snapshotsDir{b: n.b}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: inode.Hash("dir", "snapshots")}), 0
	case "wal":
		dirAttr(&out.Attr, 0o555, overlay.Owner{}, n.b.started)
		return n.NewInode(ctx, &walDir{b: n.b}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: inode.Hash("dir", "wal")}), 0
	case tablesFolder:
		dirAttr(&out.Attr, 0o555, overlay.Owner{}, n.b.started)
		return n.NewInode(ctx, &tablesRoot{b: n.b}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: inode.Hash("dir", tablesFolder)}), 0
	}
	return nil, syscall.ENOENT
}

func (n *browseRoot) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	return gofs.NewListDirStream(withDots(n.EmbeddedInode(), []fuse.DirEntry{
		{Name: "snapshots", Mode: syscall.S_IFDIR, Ino: inode.Hash("dir", "snapshots")},
		{Name: tablesFolder, Mode: syscall.S_IFDIR, Ino: inode.Hash("dir", tablesFolder)},
		{Name: "wal", Mode: syscall.S_IFDIR, Ino: inode.Hash("dir", "wal")},
	})), 0
}

// snapshotsDir lists every snapshot, plus the latest link.
type snapshotsDir struct {
	gofs.Inode
	b *browser
}

var (
	_ gofs.NodeLookuper  = (*snapshotsDir)(nil)
	_ gofs.NodeReaddirer = (*snapshotsDir)(nil)
	_ gofs.NodeGetattrer = (*snapshotsDir)(nil)
)

func (d *snapshotsDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, 0o555, overlay.Owner{}, d.b.started)
	out.SetTimeout(dynamicTimeout)
	return 0
}

// snapshot finds a snapshot by its folder name, reading the list again
// when it is not there (a backup taken since the list was read).
func (b *browser) snapshot(ctx context.Context, name string) (*repo.Snapshot, bool, error) {
	b.mu.Lock()
	s, ok := b.snaps[name]
	b.mu.Unlock()
	if ok {
		return s, true, nil
	}
	if err := b.loadSnapshots(ctx, false); err != nil {
		return nil, false, err
	}
	b.mu.Lock()
	s, ok = b.snaps[name]
	b.mu.Unlock()
	return s, ok, nil
}

func (d *snapshotsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	b := d.b
	s, ok, err := b.snapshot(ctx, name)
	if err != nil {
		return nil, toErrno(err)
	}
	if name == "latest" {
		if err := b.loadSnapshots(ctx, false); err != nil {
			return nil, toErrno(err)
		}
		target, ok := d.latest()
		if !ok {
			return nil, syscall.ENOENT
		}
		out.Mode = syscall.S_IFLNK | 0o777
		out.Size = uint64(len(target))
		out.Nlink = 1
		out.SetEntryTimeout(dynamicTimeout)
		out.SetAttrTimeout(dynamicTimeout)
		in := d.NewInode(ctx, &latestLink{d: d}, gofs.StableAttr{Mode: syscall.S_IFLNK, Ino: inode.Hash("latest")})
		b.mu.Lock()
		b.latestLink = in
		b.mu.Unlock()
		return in, 0
	}
	if !ok {
		return nil, syscall.ENOENT
	}
	root := s.RootNode
	nodeAttr(&root, &out.Attr)
	out.SetEntryTimeout(dynamicTimeout) // a pruned snapshot disappears
	return d.NewInode(ctx, &snapNode{b: b, snap: s, node: root}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: inode.Hash("snap", s.ID, "")}), 0
}

func (d *snapshotsDir) latest() (string, bool) {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	if len(d.b.snapNames) == 0 {
		return "", false
	}
	return d.b.snapNames[len(d.b.snapNames)-1], true
}

func (d *snapshotsDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	b := d.b
	if err := b.loadSnapshots(ctx, false); err != nil {
		return nil, toErrno(err)
	}
	b.mu.Lock()
	var ents []fuse.DirEntry
	for _, name := range b.snapNames {
		ents = append(ents, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: inode.Hash("snap", b.snaps[name].ID, "")})
	}
	if len(b.snapNames) > 0 {
		ents = append(ents, fuse.DirEntry{Name: "latest", Mode: syscall.S_IFLNK, Ino: inode.Hash("latest")})
	}
	b.mu.Unlock()
	slices.SortFunc(ents, func(a, b fuse.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return gofs.NewListDirStream(withDots(d.EmbeddedInode(), ents)), 0
}

// latestLink points at the newest snapshot's folder.
type latestLink struct {
	gofs.Inode
	d *snapshotsDir
}

var (
	_ gofs.NodeReadlinker = (*latestLink)(nil)
	_ gofs.NodeGetattrer  = (*latestLink)(nil)
)

func (l *latestLink) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if err := l.d.b.loadSnapshots(ctx, false); err != nil {
		return nil, toErrno(err)
	}
	t, ok := l.d.latest()
	if !ok {
		return nil, syscall.ENOENT
	}
	return []byte(t), 0
}

func (l *latestLink) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	t, _ := l.d.latest()
	out.Mode = syscall.S_IFLNK | 0o777
	out.Size = uint64(len(t))
	out.Nlink = 1
	out.SetTimeout(dynamicTimeout)
	return 0
}

// snapNode is a node of a snapshot's tree. Snapshots never change, so
// its attributes and entries keep the mount's long timeouts and its
// files FOPEN_KEEP_CACHE.
type snapNode struct {
	gofs.Inode
	b    *browser
	snap *repo.Snapshot
	node repo.Node
	path string

	openMu sync.Mutex
	file   *repo.File
	dir    *repo.Tree // decoded once: a lookup must not decode the whole folder again
}

var (
	_ gofs.NodeLookuper   = (*snapNode)(nil)
	_ gofs.NodeReaddirer  = (*snapNode)(nil)
	_ gofs.NodeGetattrer  = (*snapNode)(nil)
	_ gofs.NodeOpener     = (*snapNode)(nil)
	_ gofs.NodeReader     = (*snapNode)(nil)
	_ gofs.NodeReadlinker = (*snapNode)(nil)
)

func (s *snapNode) childPath(name string) string {
	if s.path == "" {
		return name
	}
	return s.path + "/" + name
}

func (s *snapNode) tree(ctx context.Context) (*repo.Tree, syscall.Errno) {
	if s.node.Type != repo.NodeDir {
		return nil, syscall.ENOTDIR
	}
	s.openMu.Lock()
	defer s.openMu.Unlock()
	if s.dir != nil {
		return s.dir, 0
	}
	t, err := s.b.r.LoadTree(ctx, *s.node.Subtree)
	if err != nil {
		return nil, s.b.readFailed(s.snap.ShortID()+"/"+s.path, 0, err)
	}
	s.dir = t
	return t, 0
}

func (s *snapNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t, errno := s.tree(ctx)
	if errno != 0 {
		return nil, errno
	}
	c, ok := t.Find(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	nodeAttr(c, &out.Attr)
	p := s.childPath(name)
	child := &snapNode{b: s.b, snap: s.snap, node: *c, path: p}
	return s.NewInode(ctx, child, gofs.StableAttr{Mode: out.Attr.Mode & syscall.S_IFMT, Ino: inode.Hash("snap", s.snap.ID, p)}), 0
}

func (s *snapNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	t, errno := s.tree(ctx)
	if errno != 0 {
		return nil, errno
	}
	ents := make([]fuse.DirEntry, len(t.Nodes))
	for i := range t.Nodes {
		var a fuse.Attr
		nodeAttr(&t.Nodes[i], &a)
		ents[i] = fuse.DirEntry{Name: t.Nodes[i].Name, Mode: a.Mode & syscall.S_IFMT, Ino: inode.Hash("snap", s.snap.ID, s.childPath(t.Nodes[i].Name))}
	}
	return gofs.NewListDirStream(withDots(s.EmbeddedInode(), ents)), 0
}

func (s *snapNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	nodeAttr(&s.node, &out.Attr)
	return 0
}

func (s *snapNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if s.node.Type != repo.NodeSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(s.node.Target), 0
}

// browseHandle is an open file of a browse mount.
type browseHandle struct {
	f  *repo.File
	ra chunkread.Readahead
}

func (s *snapNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if s.node.Type != repo.NodeFile {
		return nil, 0, syscall.EISDIR
	}
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EROFS
	}
	s.openMu.Lock()
	defer s.openMu.Unlock()
	if s.file == nil {
		f, err := s.b.r.OpenNode(ctx, &s.node)
		if err != nil {
			return nil, 0, s.b.readFailed(s.snap.ShortID()+"/"+s.path, 0, err)
		}
		s.file = f
	}
	return &browseHandle{f: s.file}, fuse.FOPEN_KEEP_CACHE, 0
}

func (s *snapNode) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*browseHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	return readHandle(ctx, s.b, h, s.snap.ShortID()+"/"+s.path, dest, off)
}

func readHandle(ctx context.Context, b *browser, h *browseHandle, what string, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= h.f.Size() {
		return fuse.ReadResultData(nil), 0
	}
	dest = dest[:min(int64(len(dest)), h.f.Size()-off)]
	n, err := chunkread.Read(ctx, b.pf, &h.ra, h.f, dest, off)
	if err != nil && !(errors.Is(err, io.EOF) && n == len(dest)) {
		return nil, b.readFailed(what, off, err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

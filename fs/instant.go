package fs

import (
	"context"
	"path/filepath"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/pgvault/pgvault/fs/chunkread"
	"github.com/pgvault/pgvault/fs/inode"
	"github.com/pgvault/pgvault/fs/overlay"
	"github.com/pgvault/pgvault/internal/pg/wal"
)

// InstantOptions configure the FUSE view of an overlay.
type InstantOptions struct {
	// Passthrough serves files held whole in the overlay through the
	// kernel's FUSE passthrough (reads and writes go straight to the upper
	// file) where the kernel allows it.
	Passthrough bool
	// ServeWAL adds the WALDirName folder, from which restore_command
	// copies WAL (see WALRestoreCommand); SegmentSize is the cluster's WAL
	// segment size (0: 16 MiB).
	ServeWAL    bool
	SegmentSize uint64
	// FirstSegment, with ServeWAL, is the first WAL segment recovery will
	// fetch (the backup's start segment). The mount loads it in the
	// background as it starts, so that the fetch is a copy from memory.
	FirstSegment string

	served *servedSegments
}

// instNode is a node of an instant mount: a thin FUSE face over an overlay
// node. All state lives in the Overlay.
type instNode struct {
	gofs.Inode
	ov   *overlay.Overlay
	n    *overlay.Node
	opts *InstantOptions
}

// NewInstantRoot returns the root node of an instant mount of ov.
func NewInstantRoot(ov *overlay.Overlay, opts InstantOptions) gofs.InodeEmbedder {
	if opts.SegmentSize == 0 {
		opts.SegmentSize = wal.DefaultSegmentSize
	}
	opts.served = &servedSegments{}
	return &instNode{ov: ov, n: ov.Root(), opts: &opts}
}

// OnAdd starts loading the first WAL segment when the root is mounted.
func (in *instNode) OnAdd(ctx context.Context) {
	if in.n != in.ov.Root() || !in.opts.ServeWAL || in.opts.FirstSegment == "" {
		return
	}
	d := &walServeDir{ov: in.ov, segSize: in.opts.SegmentSize, served: in.opts.served}
	in.opts.served.warm(context.WithoutCancel(ctx), d, in.opts.FirstSegment)
}

var (
	_ gofs.NodeLookuper   = (*instNode)(nil)
	_ gofs.NodeReaddirer  = (*instNode)(nil)
	_ gofs.NodeGetattrer  = (*instNode)(nil)
	_ gofs.NodeSetattrer  = (*instNode)(nil)
	_ gofs.NodeOpener     = (*instNode)(nil)
	_ gofs.NodeCreater    = (*instNode)(nil)
	_ gofs.NodeReader     = (*instNode)(nil)
	_ gofs.NodeWriter     = (*instNode)(nil)
	_ gofs.NodeFsyncer    = (*instNode)(nil)
	_ gofs.NodeFlusher    = (*instNode)(nil)
	_ gofs.NodeReleaser   = (*instNode)(nil)
	_ gofs.NodeMkdirer    = (*instNode)(nil)
	_ gofs.NodeRmdirer    = (*instNode)(nil)
	_ gofs.NodeUnlinker   = (*instNode)(nil)
	_ gofs.NodeRenamer    = (*instNode)(nil)
	_ gofs.NodeSymlinker  = (*instNode)(nil)
	_ gofs.NodeReadlinker = (*instNode)(nil)
	_ gofs.NodeLinker     = (*instNode)(nil)
	_ gofs.NodeMknoder    = (*instNode)(nil)
	_ gofs.NodeAllocater  = (*instNode)(nil)
	_ gofs.NodeStatfser   = (*instNode)(nil)
	_ gofs.NodeLseeker    = (*instNode)(nil)
	_ gofs.NodeOnAdder    = (*instNode)(nil)
)

// instHandle is an open file of an instant mount.
type instHandle struct {
	ra chunkread.Readahead
	pt bool
}

// ptHandle is an open file served by kernel passthrough.
type ptHandle struct {
	instHandle
	fd int
}

var _ gofs.FilePassthroughFder = (*ptHandle)(nil)

// PassthroughFd hands the upper file to the kernel.
func (h *ptHandle) PassthroughFd() (int, bool) { return h.fd, true }

func stableMode(k overlay.Kind) uint32 {
	switch k {
	case overlay.KindDir:
		return syscall.S_IFDIR
	case overlay.KindSymlink:
		return syscall.S_IFLNK
	}
	return syscall.S_IFREG
}

// child wraps an overlay node in an Inode.
func (in *instNode) child(ctx context.Context, c *overlay.Node) *gofs.Inode {
	return in.NewInode(ctx, &instNode{ov: in.ov, n: c, opts: in.opts}, gofs.StableAttr{Mode: stableMode(c.Kind()), Ino: c.Ino()})
}

func fillAttr(a overlay.Attr, out *fuse.Attr) {
	out.Ino = a.Ino
	out.Mode = stableMode(a.Kind) | a.Mode
	out.Size = uint64(a.Size)
	out.Uid, out.Gid = a.UID, a.GID
	out.Nlink = a.Nlink
	out.Blksize = 4096
	out.Blocks = (uint64(a.Size) + 511) / 512
	out.SetTimes(&a.MTime, &a.MTime, &a.CTime)
}

func caller(ctx context.Context) overlay.Owner {
	if c, ok := fuse.FromContext(ctx); ok {
		return overlay.Owner{UID: c.Uid, GID: c.Gid}
	}
	return overlay.Owner{}
}

// Lookup finds a directory entry.
func (in *instNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if name == WALDirName && in.opts.ServeWAL && in.n == in.ov.Root() {
		dirAttr(&out.Attr, 0o500, in.ov.Owner(), in.ov.Now())
		return in.NewInode(ctx, &walServeDir{ov: in.ov, segSize: in.opts.SegmentSize, served: in.opts.served}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: inode.Hash("serve-wal")}), 0
	}
	c, err := in.ov.Lookup(ctx, in.n, name)
	if err != nil {
		return nil, toErrno(err)
	}
	fillAttr(in.ov.Attr(c), &out.Attr)
	return in.child(ctx, c), 0
}

// Readdir lists a directory.
func (in *instNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ents, err := in.ov.List(ctx, in.n)
	if err != nil {
		return nil, toErrno(err)
	}
	out := make([]fuse.DirEntry, len(ents))
	for i, e := range ents {
		out[i] = fuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: stableMode(e.Kind)}
	}
	return gofs.NewListDirStream(withDots(in.EmbeddedInode(), out)), 0
}

// Getattr reports a node's attributes.
func (in *instNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillAttr(in.ov.Attr(in.n), &out.Attr)
	return 0
}

// Setattr changes mode, owner, size or times.
func (in *instNode) Setattr(ctx context.Context, f gofs.FileHandle, set *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var s overlay.AttrChange
	if m, ok := set.GetMode(); ok {
		s.Mode = &m
	}
	if u, ok := set.GetUID(); ok {
		s.UID = &u
	}
	if g, ok := set.GetGID(); ok {
		s.GID = &g
	}
	if sz, ok := set.GetSize(); ok {
		v := int64(sz)
		s.Size = &v
	}
	if mt, ok := set.GetMTime(); ok {
		s.MTime = &mt
	} else if set.Valid&fuse.FATTR_MTIME_NOW != 0 {
		now := time.Now()
		s.MTime = &now
	}
	if err := in.ov.Setattr(ctx, in.n, s); err != nil {
		return toErrno(err)
	}
	fillAttr(in.ov.Attr(in.n), &out.Attr)
	return 0
}

// Open opens a file. A file nothing has written during this mount keeps
// the kernel's page cache across opens (FOPEN_KEEP_CACHE); a file that
// was written does not, so that no stale page can survive. Files held
// whole in the overlay may be served by kernel passthrough.
func (in *instNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	n := in.n
	if n.Kind() != overlay.KindFile {
		return nil, 0, syscall.EINVAL
	}
	local, modified := in.ov.OpenState(n)
	if local && in.opts.Passthrough {
		if h := in.passthroughHandle(); h != nil {
			return h, 0, 0
		}
	}
	in.ov.Opened(n, false)
	var fl uint32
	if !modified {
		fl = fuse.FOPEN_KEEP_CACHE
	}
	return &instHandle{}, fl, 0
}

// passthroughHandle returns a passthrough handle if the file has no
// other kind of handle open (the kernel refuses to mix cached and
// passthrough opens of one inode).
func (in *instNode) passthroughHandle() *ptHandle {
	fd, ok := in.ov.OpenPassthrough(in.n)
	if !ok {
		return nil
	}
	return &ptHandle{instHandle: instHandle{pt: true}, fd: fd}
}

func handleOf(f gofs.FileHandle) *instHandle {
	switch h := f.(type) {
	case *instHandle:
		return h
	case *ptHandle:
		return &h.instHandle
	}
	return nil
}

// isRestoreTarget reports whether name is one PostgreSQL has
// restore_command write to (RestoreArchivedFile in xlogarchive.c).
func isRestoreTarget(name string) bool { return name == "RECOVERYXLOG" || name == "RECOVERYHISTORY" }

// Create makes and opens a new file.
func (in *instNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	c, err := in.ov.Create(ctx, in.n, name, overlay.KindFile, mode, caller(ctx), "")
	if err != nil {
		return nil, nil, 0, toErrno(err)
	}
	fillAttr(in.ov.Attr(c), &out.Attr)
	child := in.child(ctx, c)
	// A new file is held whole in the overlay from the start, so it can be
	// served by passthrough at once: PostgreSQL writes new WAL segments
	// 8 KiB at a time (16 MiB as recovery ends and at every segment
	// switch), and through the daemon each write is a round trip. Not the
	// file restore_command copies a segment into: that copy becomes a
	// reference (CloneWAL), which no passthrough handle may bypass.
	if cn, ok := child.Operations().(*instNode); ok && in.opts.Passthrough && !isRestoreTarget(name) {
		if h := cn.passthroughHandle(); h != nil {
			return child, h, 0, 0
		}
	}
	in.ov.Opened(c, false)
	return child, &instHandle{}, 0, 0
}

// Read reads file content.
func (in *instNode) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	var ra *chunkread.Readahead
	if h := handleOf(f); h != nil {
		ra = &h.ra
	}
	n, err := in.ov.Read(ctx, in.n, dest, off, ra)
	if err != nil {
		return nil, toErrno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// Write writes file content into the overlay.
func (in *instNode) Write(ctx context.Context, f gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := in.ov.Write(ctx, in.n, data, off)
	if err != nil {
		return 0, toErrno(err)
	}
	return uint32(n), 0
}

// Fsync makes the file and every namespace change so far durable.
func (in *instNode) Fsync(ctx context.Context, f gofs.FileHandle, flags uint32) syscall.Errno {
	return toErrno(in.ov.Fsync(ctx, in.n))
}

// Flush is called on every close; durability is Fsync's job, so there is
// nothing to do. ENOSYS tells the kernel so once for the whole mount
// (it stops sending FLUSH), which takes one of three round trips off
// every open and close: PostgreSQL opens and fsyncs every file of the
// data directory before crash recovery, about 1,000 files at scale 100.
func (in *instNode) Flush(ctx context.Context, f gofs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}

// Release closes a handle.
func (in *instNode) Release(ctx context.Context, f gofs.FileHandle) syscall.Errno {
	if h := handleOf(f); h != nil {
		in.ov.Released(in.n, h.pt)
	}
	return 0
}

// Mkdir makes a directory.
func (in *instNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	c, err := in.ov.Create(ctx, in.n, name, overlay.KindDir, mode, caller(ctx), "")
	if err != nil {
		return nil, toErrno(err)
	}
	fillAttr(in.ov.Attr(c), &out.Attr)
	return in.child(ctx, c), 0
}

// Symlink makes a symbolic link, except a tablespace's link to a folder
// outside the view: replaying CREATE TABLESPACE makes one, and every
// write through it would land in that folder on this host (the
// tablespace of a live cluster, when the backup is mounted on its
// database host). Refused, the replay stops there with PostgreSQL's own
// error, having written nothing into it.
func (in *instNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if filepath.IsAbs(target) && in.ov.PathOf(in.n) == "pg_tblspc" {
		in.ov.Logger().Info("refusing a tablespace link out of the view: the WAL creates a tablespace whose files would go to a folder on this host",
			"link", "pg_tblspc/"+name, "location", target)
		return nil, syscall.EPERM
	}
	c, err := in.ov.Create(ctx, in.n, name, overlay.KindSymlink, 0o777, caller(ctx), target)
	if err != nil {
		return nil, toErrno(err)
	}
	fillAttr(in.ov.Attr(c), &out.Attr)
	return in.child(ctx, c), 0
}

// Readlink returns a symbolic link's target.
func (in *instNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	t, err := in.ov.Readlink(in.n)
	if err != nil {
		return nil, toErrno(err)
	}
	return []byte(t), 0
}

// Rmdir removes an empty directory.
func (in *instNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	return toErrno(in.ov.Remove(ctx, in.n, name, true))
}

// Unlink removes a file or symbolic link; open handles keep working.
func (in *instNode) Unlink(ctx context.Context, name string) syscall.Errno {
	return toErrno(in.ov.Remove(ctx, in.n, name, false))
}

// Rename moves an entry (replacing the destination, or exchanging).
func (in *instNode) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	to, ok := newParent.(*instNode)
	if !ok {
		return syscall.EXDEV
	}
	return toErrno(in.ov.Rename(ctx, in.n, name, to.n, newName, flags))
}

// Link is not supported: a node has one parent in the overlay.
func (in *instNode) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

// Mknod is not supported (a data directory holds no devices or fifos).
func (in *instNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

// Allocate implements fallocate.
func (in *instNode) Allocate(ctx context.Context, f gofs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	return toErrno(in.ov.Allocate(ctx, in.n, int64(off), int64(size), mode))
}

// Statfs reports the scratch folder's filesystem: that is where writes go.
func (in *instNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var st unix.Statfs_t
	if err := unix.Statfs(in.ov.Scratch(), &st); err != nil {
		return toErrno(err)
	}
	out.Blocks, out.Bfree, out.Bavail = st.Blocks, st.Bfree, st.Bavail
	out.Files, out.Ffree = st.Files, st.Ffree
	out.Bsize, out.Frsize = uint32(st.Bsize), uint32(st.Frsize)
	out.NameLen = 255
	return 0
}

// Lseek implements SEEK_DATA and SEEK_HOLE: the whole file is data (holes
// are an optimisation a reader may not rely on), the only hole is at the
// end.
func (in *instNode) Lseek(ctx context.Context, f gofs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	size := uint64(in.ov.Attr(in.n).Size)
	switch whence {
	case unix.SEEK_DATA:
		if off >= size {
			return 0, syscall.ENXIO
		}
		return off, 0
	case unix.SEEK_HOLE:
		if off > size {
			return 0, syscall.ENXIO
		}
		return size, 0
	}
	return 0, syscall.EINVAL
}

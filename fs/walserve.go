package fs

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sync/errgroup"

	"github.com/pgvault/pgvault/fs/inode"
	"github.com/pgvault/pgvault/fs/overlay"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// WALDirName is the folder inside an instant mount that serves the
// repository's WAL to PostgreSQL's restore_command. It is not listed, only
// looked up by name, so `ls` and `cp -a` of the data directory skip it.
//
// Serving WAL from the mount, which reads the repository as its own
// (root) process, means restore_command is a plain `cp`: PostgreSQL's OS
// user needs no access to the repository or its password, and no process
// start or key derivation is paid per segment.
const WALDirName = ".pgvault-wal"

// WALRestoreCommand is the restore_command for an instant mount at
// mountpoint.
func WALRestoreCommand(mountpoint string) string {
	dir := filepath.Join(mountpoint, WALDirName)
	return "cp '" + strings.ReplaceAll(dir, "'", `'\''`) + "'/%f %p"
}

// walServeDir is the root's WALDirName folder.
type walServeDir struct {
	gofs.Inode
	ov      *overlay.Overlay
	segSize uint64
	served  *servedSegments
}

// servedSegments keeps the last complete segment served, for every
// inode of a mount's WALDirName folder (the kernel may forget the folder
// between two fetches). PostgreSQL asks for the segment it stopped in a
// second time when it ends recovery, and a segment costs 16 MiB of
// fetching, allocation and copying (about 25 ms of CPU). Served bytes are
// never written to, so handles share it. The mount also loads recovery's
// first segment into it before PostgreSQL asks (warm).
type servedSegments struct {
	mu      sync.Mutex
	name    string
	data    []byte
	warming string        // the segment warm is loading
	warmed  chan struct{} // closed when that load ends
}

// get returns the kept segment called name, or nil. If warm is loading
// that very segment, it waits for it rather than loading it twice.
func (c *servedSegments) get(ctx context.Context, name string) []byte {
	c.mu.Lock()
	if c.warming == name {
		ch := c.warmed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		}
		c.mu.Lock()
	}
	defer c.mu.Unlock()
	if c.name == name {
		return c.data
	}
	return nil
}

func (c *servedSegments) keep(name string, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.name, c.data = name, data
}

// warm loads the complete segment called name in the background and
// keeps it, unless a fetch kept another one meanwhile; until it is done,
// get of that name waits for it. Failures are left for the fetch to
// report.
func (c *servedSegments) warm(ctx context.Context, d *walServeDir, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.warming != "" || c.name != "" {
		return
	}
	c.warming, c.warmed = name, make(chan struct{})
	go func() {
		data, src, err := d.load(ctx, name)
		c.mu.Lock()
		defer c.mu.Unlock()
		if err == nil && src.segment && !src.Partial && c.name == "" {
			c.name, c.data = name, data
		}
		close(c.warmed)
		c.warming = ""
	}()
}

var (
	_ gofs.NodeLookuper  = (*walServeDir)(nil)
	_ gofs.NodeReaddirer = (*walServeDir)(nil)
	_ gofs.NodeGetattrer = (*walServeDir)(nil)
)

func (d *walServeDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, 0o500, d.ov.Owner(), d.ov.Now())
	out.SetTimeout(dynamicTimeout)
	return 0
}

// Readdir lists nothing: the catalogue can hold many thousands of files,
// and restore_command only ever asks for one by name.
func (d *walServeDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	return gofs.NewListDirStream(withDots(d.EmbeddedInode(), nil)), 0
}

// walSource says where a requested WAL file comes from, and the size
// served (a .partial is served as a whole segment).
type walSource struct {
	wal.Source
	size    int64
	segment bool // a segment, complete or from its .partial
}

// resolve maps a name PostgreSQL asks for to a catalogue entry, by the
// one policy wal fetch follows too (wal.Sources): complete segments, else
// the streamer's .partial, history and backup history files as stored.
func (d *walServeDir) resolve(ctx context.Context, name string) (walSource, *repo.WALFile, error) {
	sources, err := wal.Sources(name)
	if err != nil {
		return walSource{}, nil, repo.ErrWALNotFound
	}
	segment := wal.Classify(name) == wal.KindSegment
	for _, src := range sources {
		wf, err := d.ov.LoadWALFile(ctx, src.Timeline, src.Stored)
		if errors.Is(err, repo.ErrWALNotFound) {
			continue
		}
		if err != nil {
			return walSource{}, nil, err
		}
		size := wf.Size
		if src.Partial {
			size = int64(d.segSize)
		}
		return walSource{Source: src, size: size, segment: segment}, wf, nil
	}
	return walSource{}, nil, repo.ErrWALNotFound
}

func (d *walServeDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	d.ov.MarkRecovering()
	src, _, err := d.resolve(ctx, name)
	if err != nil {
		if errors.Is(err, repo.ErrWALNotFound) {
			return nil, syscall.ENOENT
		}
		d.ov.Logger().Error("WAL lookup failed", "file", name, "err", err)
		return nil, toErrno(err)
	}
	walServeAttr(src.size, d.ov.Owner(), d.ov.Now(), &out.Attr)
	// Not cached: a .partial grows while the streamer runs.
	out.SetEntryTimeout(0)
	out.SetAttrTimeout(0)
	return d.NewInode(ctx, &walServeFile{dir: d, name: name}, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: inode.Hash("serve-wal", name)}), 0
}

func walServeAttr(size int64, o overlay.Owner, t time.Time, out *fuse.Attr) {
	out.Mode = syscall.S_IFREG | 0o600 // cp gives its copy this mode; PostgreSQL needs to write pg_wal files
	out.Size = uint64(size)
	out.Nlink = 1
	out.Uid, out.Gid = o.UID, o.GID
	out.Blksize = 4096
	out.Blocks = (out.Size + 511) / 512
	out.SetTimes(&t, &t, &t)
}

// walServeFile is one WAL file served to restore_command.
type walServeFile struct {
	gofs.Inode
	dir  *walServeDir
	name string
}

var (
	_ gofs.NodeOpener         = (*walServeFile)(nil)
	_ gofs.NodeReader         = (*walServeFile)(nil)
	_ gofs.NodeGetattrer      = (*walServeFile)(nil)
	_ gofs.NodeCopyFileRanger = (*walServeFile)(nil)
)

// walServeHandle holds the whole file: restore_command copies it once.
// clone is set for a complete segment as stored, which a whole copy
// into the data directory may reference instead of copying (CloneWAL).
type walServeHandle struct {
	data  []byte
	clone *overlay.WALRef
}

func (f *walServeFile) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if h, ok := fh.(*walServeHandle); ok {
		walServeAttr(int64(len(h.data)), f.dir.ov.Owner(), f.dir.ov.Now(), &out.Attr)
		return 0
	}
	src, _, err := f.dir.resolve(ctx, f.name)
	if err != nil {
		if errors.Is(err, repo.ErrWALNotFound) {
			return syscall.ENOENT
		}
		return toErrno(err)
	}
	walServeAttr(src.size, f.dir.ov.Owner(), f.dir.ov.Now(), &out.Attr)
	out.SetTimeout(0)
	return 0
}

// Open reads the whole file, validates it and keeps it for the reads, and
// starts loading the next segment's chunks so that replay does not wait.
func (f *walServeFile) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EROFS
	}
	if data := f.dir.served.get(ctx, f.name); data != nil {
		// Only complete segments are kept.
		h := &walServeHandle{data: data}
		if seg, err := wal.ParseSegment(f.name, f.dir.segSize); err == nil {
			h.clone = &overlay.WALRef{Timeline: seg.Timeline, Name: f.name, Size: int64(len(data))}
		}
		return h, fuse.FOPEN_DIRECT_IO, 0
	}
	data, src, err := f.dir.load(ctx, f.name)
	if err != nil {
		return nil, 0, toErrno(err)
	}
	h := &walServeHandle{data: data}
	if src.segment {
		if !src.Partial {
			// A .partial is never kept: the streamer may add to it.
			f.dir.served.keep(f.name, data)
			h.clone = &overlay.WALRef{Timeline: src.Timeline, Name: src.Stored, Size: int64(len(data))}
		}
		go f.dir.prefetchNext(context.WithoutCancel(ctx), f.name)
	}
	return h, fuse.FOPEN_DIRECT_IO, 0
}

// load reads the WAL file called name from the repository and checks it
// as wal fetch does (wal.Serve: segments validated, a .partial padded to
// a whole segment, history files parsed). A missing file is ENOENT;
// damaged bytes are logged and EIO, never served.
func (d *walServeDir) load(ctx context.Context, name string) ([]byte, walSource, error) {
	log := d.ov.Logger()
	src, wf, err := d.resolve(ctx, name)
	if errors.Is(err, repo.ErrWALNotFound) {
		return nil, src, syscall.ENOENT
	}
	if err != nil {
		log.Error("WAL read failed", "file", name, "err", err)
		return nil, src, err
	}
	stored, err := readWAL(ctx, d.ov.Repository(), wf)
	var data []byte
	if err == nil {
		data, _, err = wal.Serve(src.Source, stored)
	}
	if err == nil && src.segment && uint64(len(data)) != d.segSize {
		err = fmt.Errorf("%d bytes, the backup's segments have %d", len(data), d.segSize)
	}
	if err != nil {
		// Never hand PostgreSQL bytes that are not what was archived.
		log.Error("WAL file from the repository is damaged; not serving it", "file", name, "stored", src.Stored, "err", err)
		return nil, src, syscall.EIO
	}
	return data, src, nil
}

func (f *walServeFile) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*walServeHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(h.data)))
	return fuse.ReadResultData(h.data[off:end]), 0
}

// CopyFileRange writes served WAL into a file of the data directory in one
// request. restore_command's cp copies with copy_file_range (source and
// target are on this one mount); without this the kernel falls back to
// 128 KiB reads and writes through FUSE, a round trip each: 20-70 ms per
// 16 MiB segment on the project's VM, and every start pays it at least
// twice (PostgreSQL fetches the last segment again as recovery ends).
// A whole complete segment copied into a new, empty file is not copied
// at all: the file becomes a reference to the segment (CloneWAL).
func (f *walServeFile) CopyFileRange(ctx context.Context, fhIn gofs.FileHandle, offIn uint64, out *gofs.Inode, fhOut gofs.FileHandle, offOut uint64, n uint64, flags uint64) (uint32, syscall.Errno) {
	h, ok := fhIn.(*walServeHandle)
	dst, isFile := out.Operations().(*instNode)
	if !ok || !isFile || dst.n.Kind() != overlay.KindFile {
		// The kernel then copies with reads and writes.
		return 0, syscall.EOPNOTSUPP
	}
	if offIn >= uint64(len(h.data)) || offOut > math.MaxInt64 {
		return 0, 0
	}
	if h.clone != nil && offIn == 0 && offOut == 0 && n >= uint64(len(h.data)) && len(h.data) <= math.MaxUint32 {
		ok, err := dst.ov.CloneWAL(ctx, dst.n, *h.clone)
		if err != nil {
			return 0, toErrno(err)
		}
		if ok {
			return uint32(len(h.data)), 0
		}
	}
	end := min(offIn+n, uint64(len(h.data)), offIn+math.MaxUint32)
	written, err := dst.ov.Write(ctx, dst.n, h.data[offIn:end], int64(offOut))
	if err != nil {
		return 0, toErrno(err)
	}
	return uint32(written), 0
}

// walReadParallel is how many chunks of a WAL file readWAL loads at once.
const walReadParallel = 8

// readWAL loads a catalogue entry's chunks in parallel. A failed chunk
// does not cancel the others: the blob cache hands a load's result,
// cancellation included, to every reader waiting for the same chunk, and
// the loads warm the cache for the reads to come.
func readWAL(ctx context.Context, r *repo.Repository, wf *repo.WALFile) ([]byte, error) {
	parts := make([][]byte, len(wf.Chunks))
	var g errgroup.Group
	g.SetLimit(walReadParallel)
	for i, c := range wf.Chunks {
		g.Go(func() error {
			p, err := r.LoadBlob(ctx, c.ID)
			if err != nil {
				return fmt.Errorf("WAL %s: %w", wf.Name, err)
			}
			if len(p) != int(c.Size) {
				return fmt.Errorf("WAL %s: chunk %s has %d bytes, want %d", wf.Name, c.ID.Short(), len(p), c.Size)
			}
			parts[i] = p
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make([]byte, 0, wf.Size)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out, nil
}

// prefetchNext warms the blob cache with the segment after name.
func (d *walServeDir) prefetchNext(ctx context.Context, name string) {
	seg, err := wal.ParseSegment(name, d.segSize)
	if err != nil {
		return
	}
	next := seg.Next()
	wf, err := d.ov.LoadWALFile(ctx, next.Timeline, next.Name(d.segSize))
	if err != nil {
		return
	}
	readWAL(ctx, d.ov.Repository(), wf) // errors surface when PostgreSQL asks for it
}

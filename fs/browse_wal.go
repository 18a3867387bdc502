package fs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/pgvault/pgvault/fs/inode"
	"github.com/pgvault/pgvault/fs/overlay"
	"github.com/pgvault/pgvault/repo"
)

// The wal/ folder of a browse mount: wal/<timeline>/<file> is every file
// of the repository's WAL catalogue, byte-exact.

// loadWAL rereads the WAL catalogue listing if it is older than refresh.
func (b *browser) loadWAL(ctx context.Context) (map[string][]string, error) {
	b.mu.Lock()
	if b.wal != nil && time.Since(b.walAt) < b.refresh {
		w := b.wal
		b.mu.Unlock()
		return w, nil
	}
	b.mu.Unlock()
	ents, err := b.r.ListWAL(ctx)
	if err != nil {
		return nil, err
	}
	w := map[string][]string{}
	for _, e := range ents {
		d := tliName(e.Timeline)
		w[d] = append(w[d], e.Name)
	}
	for _, names := range w {
		slices.Sort(names)
	}
	b.mu.Lock()
	b.wal, b.walAt = w, time.Now()
	b.mu.Unlock()
	return w, nil
}

func tliName(tli uint32) string { return fmt.Sprintf("%08X", tli) }

// walDir lists the timelines of the WAL catalogue.
type walDir struct {
	gofs.Inode
	b *browser
}

var (
	_ gofs.NodeLookuper  = (*walDir)(nil)
	_ gofs.NodeReaddirer = (*walDir)(nil)
	_ gofs.NodeGetattrer = (*walDir)(nil)
)

func (d *walDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, 0o555, overlay.Owner{}, d.b.started)
	out.SetTimeout(dynamicTimeout)
	return 0
}

func (d *walDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	w, err := d.b.loadWAL(ctx)
	if err != nil {
		return nil, toErrno(err)
	}
	if _, ok := w[name]; !ok {
		return nil, syscall.ENOENT
	}
	tli, err := strconv.ParseUint(name, 16, 32)
	if err != nil {
		return nil, syscall.ENOENT
	}
	d.b.mu.Lock()
	o := d.b.owner
	d.b.mu.Unlock()
	dirAttr(&out.Attr, 0o700, o, d.b.started)
	out.SetEntryTimeout(dynamicTimeout)
	out.SetAttrTimeout(dynamicTimeout)
	return d.NewInode(ctx, &walTimelineDir{b: d.b, tli: uint32(tli), name: name}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: inode.Hash("wal", name)}), 0
}

func (d *walDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	w, err := d.b.loadWAL(ctx)
	if err != nil {
		return nil, toErrno(err)
	}
	var ents []fuse.DirEntry
	for _, name := range slices.Sorted(maps.Keys(w)) {
		ents = append(ents, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: inode.Hash("wal", name)})
	}
	return gofs.NewListDirStream(withDots(d.EmbeddedInode(), ents)), 0
}

// walTimelineDir lists the WAL files of one timeline.
type walTimelineDir struct {
	gofs.Inode
	b    *browser
	tli  uint32
	name string
}

var (
	_ gofs.NodeLookuper  = (*walTimelineDir)(nil)
	_ gofs.NodeReaddirer = (*walTimelineDir)(nil)
	_ gofs.NodeGetattrer = (*walTimelineDir)(nil)
)

func (d *walTimelineDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.b.mu.Lock()
	o := d.b.owner
	d.b.mu.Unlock()
	dirAttr(&out.Attr, 0o700, o, d.b.started)
	out.SetTimeout(dynamicTimeout)
	return 0
}

func walAttr(wf *repo.WALFile, o overlay.Owner, out *fuse.Attr) {
	out.Mode = syscall.S_IFREG | 0o600
	out.Size = uint64(wf.Size)
	out.Nlink = 1
	out.Uid, out.Gid = o.UID, o.GID
	out.Blksize = 4096
	out.Blocks = (out.Size + 511) / 512
	t := wf.Created
	out.SetTimes(&t, &t, &t)
}

func (d *walTimelineDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	wf, err := d.b.r.LoadWALFile(ctx, d.tli, name)
	if err != nil {
		if errors.Is(err, repo.ErrWALNotFound) {
			return nil, syscall.ENOENT
		}
		return nil, d.b.readFailed("wal/"+d.name+"/"+name, 0, err)
	}
	d.b.mu.Lock()
	o := d.b.owner
	d.b.mu.Unlock()
	walAttr(wf, o, &out.Attr)
	if wf.Partial {
		out.SetEntryTimeout(dynamicTimeout)
		out.SetAttrTimeout(dynamicTimeout)
	}
	return d.NewInode(ctx, &walFileNode{b: d.b, dir: d, name: name}, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: inode.Hash("wal", d.name, name)}), 0
}

func (d *walTimelineDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	w, err := d.b.loadWAL(ctx)
	if err != nil {
		return nil, toErrno(err)
	}
	var ents []fuse.DirEntry
	for _, name := range w[d.name] {
		ents = append(ents, fuse.DirEntry{Name: name, Mode: syscall.S_IFREG, Ino: inode.Hash("wal", d.name, name)})
	}
	return gofs.NewListDirStream(withDots(d.EmbeddedInode(), ents)), 0
}

// walFileNode is one WAL file of the catalogue, served byte-exact. A
// complete segment or history file never changes; a .partial segment is
// replaced while the streamer runs, so it is read afresh at every open and
// not kept in the page cache.
type walFileNode struct {
	gofs.Inode
	b    *browser
	dir  *walTimelineDir
	name string
}

var (
	_ gofs.NodeOpener    = (*walFileNode)(nil)
	_ gofs.NodeReader    = (*walFileNode)(nil)
	_ gofs.NodeGetattrer = (*walFileNode)(nil)
)

func (w *walFileNode) load(ctx context.Context) (*repo.WALFile, syscall.Errno) {
	wf, err := w.b.r.LoadWALFile(ctx, w.dir.tli, w.name)
	if err != nil {
		if errors.Is(err, repo.ErrWALNotFound) {
			return nil, syscall.ENOENT
		}
		return nil, w.b.readFailed("wal/"+w.dir.name+"/"+w.name, 0, err)
	}
	return wf, 0
}

func (w *walFileNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	wf, errno := w.load(ctx)
	if errno != 0 {
		return errno
	}
	w.b.mu.Lock()
	o := w.b.owner
	w.b.mu.Unlock()
	walAttr(wf, o, &out.Attr)
	if wf.Partial {
		out.SetTimeout(dynamicTimeout)
	}
	return 0
}

func (w *walFileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EROFS
	}
	wf, errno := w.load(ctx)
	if errno != 0 {
		return nil, 0, errno
	}
	f, err := w.b.r.OpenNode(ctx, &repo.Node{Name: w.name, Type: repo.NodeFile, Size: wf.Size, Chunks: wf.Chunks})
	if err != nil {
		return nil, 0, w.b.readFailed("wal/"+w.dir.name+"/"+w.name, 0, err)
	}
	var fl uint32
	if !wf.Partial {
		fl = fuse.FOPEN_KEEP_CACHE
	}
	return &browseHandle{f: f}, fl, 0
}

func (w *walFileNode) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*browseHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	return readHandle(ctx, w.b, h, "wal/"+w.dir.name+"/"+w.name, dest, off)
}

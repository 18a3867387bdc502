package fs

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/fs/chunkread"
	"github.com/pgvault/pgvault/fs/fstest"
	"github.com/pgvault/pgvault/fs/inode"
	"github.com/pgvault/pgvault/fs/overlay"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/repotest"
)

// FUSE nodes are tested by calling their methods on a node tree that
// NewNodeFS set up, without a mount.

func lookup(t *testing.T, parent gofs.InodeEmbedder, name string) (*gofs.Inode, fuse.EntryOut) {
	t.Helper()
	var out fuse.EntryOut
	l, ok := parent.(gofs.NodeLookuper)
	if !ok {
		t.Fatalf("%T cannot look up", parent)
	}
	in, errno := l.Lookup(context.Background(), name, &out)
	if errno != 0 {
		t.Fatalf("lookup %s: %v", name, errno)
	}
	return in, out
}

func walkNodes(t *testing.T, root gofs.InodeEmbedder, p string) (gofs.InodeEmbedder, fuse.EntryOut) {
	t.Helper()
	cur := root
	var out fuse.EntryOut
	for _, name := range strings.Split(p, "/") {
		var in *gofs.Inode
		in, out = lookup(t, cur, name)
		cur = in.Operations()
	}
	return cur, out
}

func readAll(t *testing.T, n gofs.InodeEmbedder, fh gofs.FileHandle, size int) []byte {
	t.Helper()
	r := n.(gofs.NodeReader)
	var out []byte
	buf := make([]byte, 128<<10)
	for off := 0; ; {
		res, errno := r.Read(context.Background(), fh, buf, int64(off))
		if errno != 0 {
			t.Fatalf("read at %d: %v", off, errno)
		}
		b, _ := res.Bytes(nil)
		if len(b) == 0 {
			break
		}
		out = append(out, b...)
		off += len(b)
	}
	if len(out) != size {
		t.Fatalf("read %d bytes, want %d", len(out), size)
	}
	return out
}

func names(t *testing.T, n gofs.InodeEmbedder) []string {
	t.Helper()
	ds, errno := n.(gofs.NodeReaddirer).Readdir(context.Background())
	if errno != 0 {
		t.Fatal(errno)
	}
	var out []string
	for ds.HasNext() {
		e, _ := ds.Next()
		if e.Name != "." && e.Name != ".." {
			out = append(out, e.Name)
		}
	}
	return out
}

func TestBrowseNodes(t *testing.T) {
	tree := fstest.SampleTree()
	r, s := fstest.Snapshot(t, tree)
	ctx := context.Background()
	segment := fstest.RandBytes(5, 16<<20)
	if _, err := r.SaveWAL(ctx, 1, "000000010000000000000002", segment, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SaveWAL(ctx, 1, "000000010000000000000003.partial", segment[:5000], true); err != nil {
		t.Fatal(err)
	}
	root, err := NewBrowseRoot(ctx, r, BrowseOptions{Prefetcher: chunkread.NewPrefetcher(ctx, r, 4, 8)})
	if err != nil {
		t.Fatal(err)
	}
	gofs.NewNodeFS(root, &gofs.Options{})

	snaps, _ := lookup(t, root, "snapshots")
	if got := names(t, snaps.Operations()); len(got) != 2 || got[0] != s.ShortID() || got[1] != "latest" {
		t.Fatalf("snapshots/ lists %v", got)
	}
	latest, _ := lookup(t, snaps.Operations(), "latest")
	if target, errno := latest.Operations().(gofs.NodeReadlinker).Readlink(ctx); errno != 0 || string(target) != s.ShortID() {
		t.Fatalf("latest -> %q %v", target, errno)
	}
	dir, out := lookup(t, snaps.Operations(), s.ShortID())
	if out.Mode != syscall.S_IFDIR|0o700 || out.Uid != 70 {
		t.Fatalf("snapshot root attr %o uid %d", out.Mode, out.Uid)
	}
	for p, want := range tree.Files {
		n, out := walkNodes(t, dir.Operations(), p)
		if out.Size != uint64(len(want)) || out.Mode != syscall.S_IFREG|0o600 || out.Uid != 70 || out.Gid != 71 || out.Mtime != uint64(fstest.ModTime.Unix()) {
			t.Fatalf("%s attr: %+v", p, out.Attr)
		}
		fh, flags, errno := n.(gofs.NodeOpener).Open(ctx, syscall.O_RDONLY)
		if errno != 0 || flags&fuse.FOPEN_KEEP_CACHE == 0 {
			t.Fatalf("open %s: %v flags %x (want FOPEN_KEEP_CACHE)", p, errno, flags)
		}
		if got := readAll(t, n, fh, len(want)); !bytes.Equal(got, want) {
			t.Fatalf("%s content differs", p)
		}
	}
	n, _ := walkNodes(t, dir.Operations(), "PG_VERSION")
	if _, _, errno := n.(gofs.NodeOpener).Open(ctx, syscall.O_RDWR); errno != syscall.EROFS {
		t.Fatalf("open for writing: %v, want EROFS", errno)
	}
	// Tablespaces stay folders inside the snapshot: a copy is self-contained.
	if _, out := walkNodes(t, dir.Operations(), "pg_tblspc/16385"); out.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		t.Fatal("tablespace is not a folder")
	}
	if l, out := walkNodes(t, dir.Operations(), "lnk"); out.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		t.Fatal("symlink type")
	} else if tgt, _ := l.(gofs.NodeReadlinker).Readlink(ctx); string(tgt) != "PG_VERSION" {
		t.Fatal("symlink target")
	}

	// WAL, byte-exact; a partial is not cached.
	walRoot, _ := lookup(t, root, "wal")
	if got := names(t, walRoot.Operations()); len(got) != 1 || got[0] != "00000001" {
		t.Fatalf("wal/ lists %v", got)
	}
	tl, _ := lookup(t, walRoot.Operations(), "00000001")
	if got := names(t, tl.Operations()); len(got) != 2 {
		t.Fatalf("wal/00000001 lists %v", got)
	}
	for name, want := range map[string][]byte{"000000010000000000000002": segment, "000000010000000000000003.partial": segment[:5000]} {
		w, out := lookup(t, tl.Operations(), name)
		if out.Size != uint64(len(want)) {
			t.Fatalf("%s size %d", name, out.Size)
		}
		fh, flags, errno := w.Operations().(gofs.NodeOpener).Open(ctx, syscall.O_RDONLY)
		if errno != 0 {
			t.Fatal(errno)
		}
		if keep := flags&fuse.FOPEN_KEEP_CACHE != 0; keep == strings.HasSuffix(name, ".partial") {
			t.Fatalf("%s: keep cache %v", name, keep)
		}
		if got := readAll(t, w.Operations(), fh, len(want)); !bytes.Equal(got, want) {
			t.Fatalf("%s differs", name)
		}
	}

	// Inode numbers are deterministic across mounts.
	root2, _ := NewBrowseRoot(ctx, r, BrowseOptions{})
	gofs.NewNodeFS(root2, &gofs.Options{})
	snaps2, _ := lookup(t, root2, "snapshots")
	dir2, _ := lookup(t, snaps2.Operations(), s.ShortID())
	a, _ := walkNodes(t, dir.Operations(), "base/1/16384")
	b, _ := walkNodes(t, dir2.Operations(), "base/1/16384")
	if a.EmbeddedInode().StableAttr().Ino != b.EmbeddedInode().StableAttr().Ino {
		t.Fatal("inode numbers differ between mounts")
	}
}

// A damaged chunk is EIO on the reads that need it, with a log line naming
// it; other reads go on.
func TestBrowseReadErrorIsEIO(t *testing.T) {
	tree := fstest.SampleTree()
	r, s, be := fstest.Store(t, tree)
	ctx := context.Background()
	n, err := r.Lookup(ctx, s, "base/1/16384")
	if err != nil {
		t.Fatal(err)
	}
	chunks, _ := r.ChunkList(ctx, n)
	damageBlob(t, be, r, chunks[1].ID)
	fresh, err := repo.Open(ctx, be, []byte(repotest.Password), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	var logs bytes.Buffer
	root, err := NewBrowseRoot(ctx, fresh, BrowseOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	gofs.NewNodeFS(root, &gofs.Options{})
	f, _ := walkNodes(t, root, "snapshots/"+s.ShortID()+"/base/1/16384")
	fh, _, errno := f.(gofs.NodeOpener).Open(ctx, syscall.O_RDONLY)
	if errno != 0 {
		t.Fatal(errno)
	}
	buf := make([]byte, 4096)
	if _, errno := f.(gofs.NodeReader).Read(ctx, fh, buf, 0); errno != 0 {
		t.Fatalf("read of an intact chunk: %v", errno)
	}
	if _, errno := f.(gofs.NodeReader).Read(ctx, fh, buf, 128<<10+10); errno != syscall.EIO {
		t.Fatalf("read of a damaged chunk: %v, want EIO", errno)
	}
	if !strings.Contains(logs.String(), chunks[1].ID.Short()) {
		t.Fatalf("log does not name the chunk %s:\n%s", chunks[1].ID.Short(), logs.String())
	}
}

// damageBlob flips a byte in the middle of a blob in its pack.
func damageBlob(t *testing.T, be backend.Backend, r *repo.Repository, id chunk.ID) {
	t.Helper()
	ctx := context.Background()
	{
		e, ok := r.LookupBlob(id)
		if !ok {
			t.Fatalf("blob %s not indexed", id)
		}
		h := backend.Handle{Type: backend.PackFile, Name: e.Pack.String()}
		data, err := be.Load(ctx, h, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		data[int(e.Offset)+int(e.Length)/2] ^= 0xff
		if err := be.Remove(ctx, h); err != nil {
			t.Fatal(err)
		}
		if err := be.Save(ctx, h, data); err != nil {
			t.Fatal(err)
		}
	}
}

func TestInstantNodes(t *testing.T) {
	tree := fstest.SampleTree()
	r, s := fstest.Snapshot(t, tree)
	ov := openTestOverlay(t, r, s, t.TempDir())
	defer ov.Close(context.Background())
	root := NewInstantRoot(ov, InstantOptions{})
	gofs.NewNodeFS(root, &gofs.Options{})
	ctx := fuse.NewContext(context.Background(), &fuse.Caller{Owner: fuse.Owner{Uid: 1000, Gid: 1001}})

	var attr fuse.AttrOut
	if errno := root.(gofs.NodeGetattrer).Getattr(ctx, nil, &attr); errno != 0 || attr.Mode != syscall.S_IFDIR|0o700 || attr.Uid != 1000 {
		t.Fatalf("root: %o uid %d (%v): PostgreSQL needs 0700 and its own user", attr.Mode, attr.Uid, errno)
	}
	// An untouched snapshot file keeps the page cache; once written, not.
	rel, _ := walkNodes(t, root, "base/1/16384")
	fh, flags, errno := rel.(gofs.NodeOpener).Open(ctx, syscall.O_RDWR)
	if errno != 0 || flags&fuse.FOPEN_KEEP_CACHE == 0 {
		t.Fatalf("open untouched: %v %x", errno, flags)
	}
	if got := readAll(t, rel, fh, len(tree.Files["base/1/16384"])); !bytes.Equal(got, tree.Files["base/1/16384"]) {
		t.Fatal("content")
	}
	if n, errno := rel.(gofs.NodeWriter).Write(ctx, fh, []byte("page"), 8192); errno != 0 || n != 4 {
		t.Fatal(n, errno)
	}
	if errno := rel.(gofs.NodeFsyncer).Fsync(ctx, fh, 0); errno != 0 {
		t.Fatal(errno)
	}
	rel.(gofs.NodeReleaser).Release(ctx, fh)
	fh, flags, _ = rel.(gofs.NodeOpener).Open(ctx, syscall.O_RDONLY)
	if flags&fuse.FOPEN_KEEP_CACHE != 0 {
		t.Fatal("a written file keeps the page cache")
	}
	rel.(gofs.NodeReleaser).Release(ctx, fh)

	// Create, write, rename over, unlink, mkdir, symlink, setattr.
	var eout fuse.EntryOut
	in, fh, _, errno := root.(gofs.NodeCreater).Create(ctx, "new.conf", syscall.O_RDWR, 0o600, &eout)
	if errno != 0 || eout.Uid != 1000 || eout.Ino < inode.OverlayBase {
		t.Fatalf("create: %v uid %d ino %d", errno, eout.Uid, eout.Ino)
	}
	in.Operations().(gofs.NodeWriter).Write(ctx, fh, []byte("port = 5433\n"), 0)
	in.Operations().(gofs.NodeReleaser).Release(ctx, fh)
	if errno := root.(gofs.NodeRenamer).Rename(ctx, "new.conf", root, "postgresql.auto.conf", 0); errno != 0 {
		t.Fatal(errno)
	}
	if got := mustRead(t, ov, "postgresql.auto.conf"); string(got) != "port = 5433\n" {
		t.Fatalf("after rename: %q", got)
	}
	if errno := root.(gofs.NodeUnlinker).Unlink(ctx, "PG_VERSION"); errno != 0 {
		t.Fatal(errno)
	}
	if _, errno := root.(gofs.NodeLookuper).Lookup(ctx, "PG_VERSION", &eout); errno != syscall.ENOENT {
		t.Fatalf("lookup unlinked: %v", errno)
	}
	if _, errno := root.(gofs.NodeMkdirer).Mkdir(ctx, "pg_stat_tmp2", 0o700, &eout); errno != 0 {
		t.Fatal(errno)
	}
	if _, errno := root.(gofs.NodeSymlinker).Symlink(ctx, "/elsewhere", "ln2", &eout); errno != 0 || eout.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		t.Fatal(errno)
	}
	// A tablespace link out of the view (replayed CREATE TABLESPACE) is
	// refused: writes through it would land on this host.
	tblspc, _ := lookup(t, root, "pg_tblspc")
	if _, errno := tblspc.Operations().(gofs.NodeSymlinker).Symlink(ctx, "/srv/tablespace", "16999", &eout); errno != syscall.EPERM {
		t.Fatalf("tablespace link out of the view: %v, want EPERM", errno)
	}
	if _, errno := root.(gofs.NodeLinker).Link(ctx, rel, "hard", &eout); errno != syscall.EPERM {
		t.Fatalf("link: %v", errno)
	}
	var sin fuse.SetAttrIn
	sin.Valid = fuse.FATTR_SIZE | fuse.FATTR_MODE
	sin.Size, sin.Mode = 100, 0o640
	if errno := rel.(gofs.NodeSetattrer).Setattr(ctx, nil, &sin, &attr); errno != 0 || attr.Size != 100 || attr.Mode&0o777 != 0o640 {
		t.Fatalf("setattr: %v size %d mode %o", errno, attr.Size, attr.Mode)
	}
	if errno := root.(gofs.NodeRmdirer).Rmdir(ctx, "base"); errno != syscall.ENOTEMPTY {
		t.Fatalf("rmdir base: %v", errno)
	}
	got := names(t, root)
	for _, want := range []string{"pg_stat_tmp2", "ln2", "postgresql.auto.conf", "base"} {
		found := false
		for _, n := range got {
			found = found || n == want
		}
		if !found {
			t.Fatalf("root lists %v, missing %s", got, want)
		}
	}
	var st fuse.StatfsOut
	if errno := root.(gofs.NodeStatfser).Statfs(ctx, &st); errno != 0 || st.Blocks == 0 {
		t.Fatalf("statfs: %v %+v", errno, st)
	}
}

func TestToErrno(t *testing.T) {
	tests := []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{context.Canceled, syscall.EINTR},
		{errors.Join(errors.New("x"), syscall.ENOSPC), syscall.ENOSPC},
		{wrap(repo.ErrFileNotFound), syscall.ENOENT},
		{wrap(repo.ErrWALNotFound), syscall.ENOENT},
		{wrap(repo.ErrBlobNotFound), syscall.EIO},
		{wrap(repo.ErrContentCorrupt), syscall.EIO},
		{errors.New("anything"), syscall.EIO},
	}
	for _, tt := range tests {
		if got := toErrno(tt.err); got != tt.want {
			t.Errorf("toErrno(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func wrap(err error) error { return errors.Join(errors.New("context"), err) }

// TestInstantServesWarmSegment: the instant mount loads recovery's first
// segment as it is mounted and serves it from memory (here: after its
// stored chunk was damaged); a fetch that arrives while that load runs
// waits for it instead of loading again; a damaged segment nobody loaded
// is EIO.
func TestInstantServesWarmSegment(t *testing.T) {
	tree := fstest.SampleTree()
	r, s, be := fstest.Store(t, tree)
	ctx := context.Background()
	const first, second = "000000010000000000000002", "000000010000000000000003"
	segs := map[string][]byte{first: wal.FakeSegment(1, 0x2000000, 16<<20, 7), second: wal.FakeSegment(1, 0x3000000, 16<<20, 7)}
	for name, b := range segs {
		if _, err := r.SaveWAL(ctx, 1, name, b, false); err != nil {
			t.Fatal(err)
		}
	}
	open := func() (*overlay.Overlay, *servedSegments, gofs.InodeEmbedder) {
		fresh, err := repo.Open(ctx, be, []byte(repotest.Password), repo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fresh.Close() })
		ov, err := overlay.Open(ctx, fresh, s, overlay.Options{Scratch: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ov.Close(ctx) })
		root := NewInstantRoot(ov, InstantOptions{ServeWAL: true, FirstSegment: first})
		return ov, root.(*instNode).opts.served, root
	}
	fetch := func(root gofs.InodeEmbedder, name string) ([]byte, syscall.Errno) {
		dir, _ := lookup(t, root, WALDirName)
		f, _ := lookup(t, dir.Operations(), name)
		fh, _, errno := f.Operations().(gofs.NodeOpener).Open(ctx, syscall.O_RDONLY)
		if errno != 0 {
			return nil, errno
		}
		return readAll(t, f.Operations(), fh, 16<<20), 0
	}

	// Mounting (OnAdd) loads it before anyone asks; the fetch gets it.
	_, served, root := open()
	gofs.NewNodeFS(root, &gofs.Options{})
	if !bytes.Equal(served.get(ctx, first), segs[first]) {
		t.Fatal("the first segment was not loaded at mount")
	}
	if got, errno := fetch(root, first); errno != 0 || !bytes.Equal(got, segs[first]) {
		t.Fatalf("first segment: %v", errno)
	}

	for name := range segs {
		wf, err := r.LoadWALFile(ctx, 1, name)
		if err != nil {
			t.Fatal(err)
		}
		damageBlob(t, be, r, wf.Chunks[0].ID)
	}

	// A fetch during a load waits for it: were it to load by itself, it
	// would read the damaged chunk.
	_, served, root = open()
	served.warming, served.warmed = first, make(chan struct{})
	gofs.NewNodeFS(root, &gofs.Options{}) // its own load sees this one and stays out
	done := make(chan []byte)
	go func() {
		got, _ := fetch(root, first)
		done <- got
	}()
	served.mu.Lock()
	served.name, served.data = first, segs[first]
	close(served.warmed)
	served.warming = ""
	served.mu.Unlock()
	if got := <-done; !bytes.Equal(got, segs[first]) {
		t.Fatal("the fetch did not wait for the load in progress")
	}
	// Never loaded: its damaged chunk is EIO, not bytes.
	if got, errno := fetch(root, second); errno != syscall.EIO {
		t.Fatalf("damaged second segment: %d bytes, %v; want EIO", len(got), errno)
	}
}

// TestInstantChecksHistoryFiles: the WAL view checks a timeline history
// file as wal fetch does (wal.Serve) before serving it: one that names a
// parent newer than itself is EIO, a good one is served as stored. (The
// view used to check segments only.)
func TestInstantChecksHistoryFiles(t *testing.T) {
	r, s, _ := fstest.Store(t, fstest.SampleTree())
	ctx := context.Background()
	files := map[string]string{
		"00000002.history": "1\t0/3000000\tno recovery target specified\n",
		"00000003.history": "1\t0/3000000\tno reason\n4\t0/5000000\tparent newer than its child\n",
	}
	for name, content := range files {
		if _, err := r.SaveWAL(ctx, wal.NameTimeline(name), name, []byte(content), false); err != nil {
			t.Fatal(err)
		}
	}
	ov := openTestOverlay(t, r, s, t.TempDir())
	root := NewInstantRoot(ov, InstantOptions{ServeWAL: true})
	gofs.NewNodeFS(root, &gofs.Options{})
	dir, _ := lookup(t, root, WALDirName)
	open := func(name string) ([]byte, syscall.Errno) {
		f, _ := lookup(t, dir.Operations(), name)
		fh, _, errno := f.Operations().(gofs.NodeOpener).Open(ctx, syscall.O_RDONLY)
		if errno != 0 {
			return nil, errno
		}
		return readAll(t, f.Operations(), fh, len(files[name])), 0
	}
	if got, errno := open("00000002.history"); errno != 0 || string(got) != files["00000002.history"] {
		t.Fatalf("good history file: %q, %v", got, errno)
	}
	if _, errno := open("00000003.history"); errno != syscall.EIO {
		t.Fatalf("history file naming a newer parent: %v, want EIO", errno)
	}
}

package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/file"
	"github.com/pgvault/pgvault/repo/backend/mem"
	"github.com/pgvault/pgvault/repo/backend/retry"
)

var ctx = context.Background()

func randBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func TestInitOpenErrors(t *testing.T) {
	be := mem.New()
	if _, err := Open(ctx, be, []byte("x"), Options{}); !errors.Is(err, ErrNotRepository) {
		t.Fatalf("open empty backend: err = %v, want ErrNotRepository", err)
	}
	if _, err := Init(ctx, be, InitOptions{KDF: testKDF()}); !errors.Is(err, ErrNoPassword) {
		t.Fatalf("init without password: err = %v, want ErrNoPassword", err)
	}
	if _, err := Init(ctx, be, InitOptions{Password: []byte("pw"), KDF: testKDF()}); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(ctx, be, InitOptions{Password: []byte("pw"), KDF: testKDF()}); !errors.Is(err, ErrRepoExists) {
		t.Fatalf("second init: err = %v, want ErrRepoExists", err)
	}
	_, err := Open(ctx, be, []byte("wrong"), Options{})
	if !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: err = %v", err)
	}
	if err.Error() != "wrong password or not a pgvault repository" {
		t.Fatalf("wrong password message = %q", err)
	}
	if _, err := Open(ctx, be, nil, Options{}); !errors.Is(err, ErrNoPassword) {
		t.Fatalf("no password: err = %v", err)
	}
	r, err := Open(ctx, be, []byte("pw"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
}

func TestConfigRejectsOtherVersions(t *testing.T) {
	tests := map[string]string{
		"not json":       `{`,
		"other format":   `{"format":"restic","version":1}`,
		"future version": `{"format":"pgvault","version":2,"id":"0123456789abcdef0123456789abcdef","encryption":"none","chunk_size":131072}`,
		"bad chunk size": `{"format":"pgvault","version":1,"id":"0123456789abcdef0123456789abcdef","encryption":"none","chunk_size":1000}`,
		"bad encryption": `{"format":"pgvault","version":1,"id":"0123456789abcdef0123456789abcdef","encryption":"rot13","chunk_size":131072}`,
	}
	for name, doc := range tests {
		if _, err := ParseConfig([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestUnencryptedRepository(t *testing.T) {
	be := mem.New()
	if _, err := Init(ctx, be, InitOptions{NoEncryption: true}); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, be, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data := []byte(strings.Repeat("plain but checked ", 1000))
	s := writeSnapshot(t, r, map[string][]byte{"a.txt": data})
	got := readAll(t, r, s, "a.txt")
	if !bytes.Equal(got, data) {
		t.Fatal("round trip mismatch")
	}
	res, err := r.Check(ctx, CheckOptions{ReadData: true})
	if err != nil || len(res.Errors) > 0 {
		t.Fatalf("check: %v %v", err, res.Errors)
	}
}

// writeSnapshot stores files (path -> content); paths ending in "/" are
// directories, content "->target" makes a symlink.
func writeSnapshot(t testing.TB, r *Repository, files map[string][]byte) *Snapshot {
	t.Helper()
	w := r.NewSnapshotWriter(ctx)
	for p, data := range files {
		meta := NodeMeta{Mode: 0o600, UID: 26, GID: 26, ModTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
		switch {
		case strings.HasSuffix(p, "/"):
			meta.Mode = 0o700
			if err := w.AddDir(p, meta); err != nil {
				t.Fatal(err)
			}
		case bytes.HasPrefix(data, []byte("->")):
			if err := w.AddSymlink(p, string(data[2:]), meta); err != nil {
				t.Fatal(err)
			}
		default:
			kind := SplitCDC
			if strings.HasPrefix(p, "base/") {
				kind = SplitFixed
			}
			n, err := w.AddFile(p, meta, bytes.NewReader(data), kind)
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(len(data)) {
				t.Fatalf("AddFile read %d of %d bytes", n, len(data))
			}
		}
	}
	s, err := w.Commit(ctx, SnapshotInfo{Kind: "files", Label: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readAll(t testing.TB, r *Repository, s *Snapshot, p string) []byte {
	t.Helper()
	f, err := r.OpenFile(ctx, s, p)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := f.WriteTo(ctx, &buf, 4); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sampleFiles() map[string][]byte {
	return map[string][]byte{
		"PG_VERSION":       []byte("15\n"),
		"empty":            {},
		"global/":          nil,
		"base/1/1259":      randBytes(1, 3*128<<10+8192), // fixed chunks, inline list
		"base/1/16384":     randBytes(2, 20*128<<10),     // fixed chunks, content-list blob
		"pg_xact/0000":     randBytes(3, 256<<10),
		"postgresql.conf":  []byte(strings.Repeat("# comment\n", 5000)),
		"pg_tblspc/16385":  []byte("->/srv/tblspc"),
		"deep/a/b/c/d.txt": []byte("deep"),
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	r, be := newTestRepo(t)
	files := sampleFiles()
	s := writeSnapshot(t, r, files)

	// A fresh Open proves everything reached the backend and the index.
	r2, err := Open(ctx, be, []byte(testPassword), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	s2, err := r2.FindSnapshot(ctx, "latest")
	if err != nil {
		t.Fatal(err)
	}
	if s2.ID != s.ID || s2.Label != "test" || s2.Summary.Files != 7 {
		t.Fatalf("snapshot = %+v", s2)
	}
	seen := map[string]bool{}
	err = r2.Walk(ctx, s2.Root, func(p string, n *Node) error {
		seen[p] = true
		want, ok := files[p]
		if n.Type == NodeDir {
			if ok && n.Mode != 0o700 {
				t.Errorf("%s: mode %v", p, n.Mode)
			}
			return nil
		}
		if !ok {
			t.Errorf("unexpected %s", p)
			return nil
		}
		if n.Type == NodeSymlink {
			if n.Target != string(want[2:]) {
				t.Errorf("%s: target %q", p, n.Target)
			}
			return nil
		}
		if n.Mode != 0o600 || n.UID != 26 || !n.ModTime.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
			t.Errorf("%s: metadata %v %d %v", p, n.Mode, n.UID, n.ModTime)
		}
		if got := readAll(t, r2, s2, p); !bytes.Equal(got, want) {
			t.Errorf("%s: content differs (%d vs %d bytes)", p, len(got), len(want))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := range files {
		if !seen[strings.TrimSuffix(p, "/")] {
			t.Errorf("%s missing from the snapshot", p)
		}
	}
}

func TestReadAtRandomRanges(t *testing.T) {
	r, _ := newTestRepo(t)
	data := randBytes(9, 10*128<<10+1234)
	s := writeSnapshot(t, r, map[string][]byte{"base/1/2": data})
	f, err := r.OpenFile(ctx, s, "base/1/2")
	if err != nil {
		t.Fatal(err)
	}
	cs := int64(128 << 10)
	tests := []struct {
		off, n  int64
		wantN   int
		wantEOF bool
	}{
		{0, 8192, 8192, false},
		{cs - 100, 200, 200, false}, // across a chunk boundary
		{3*cs + 5, 3 * cs, int(3 * cs), false},
		{int64(len(data)) - 10, 100, 10, true},
		{int64(len(data)), 10, 0, true},
		{int64(len(data)) + 5, 10, 0, true},
	}
	for _, tt := range tests {
		p := make([]byte, tt.n)
		n, err := f.ReadAt(p, tt.off)
		if n != tt.wantN || (err == io.EOF) != tt.wantEOF || (err != nil && err != io.EOF) {
			t.Errorf("ReadAt(%d, %d) = %d, %v; want %d, eof=%v", tt.off, tt.n, n, err, tt.wantN, tt.wantEOF)
			continue
		}
		if n > 0 && !bytes.Equal(p[:n], data[tt.off:tt.off+int64(n)]) {
			t.Errorf("ReadAt(%d, %d): wrong bytes", tt.off, tt.n)
		}
	}
}

func TestDedupAcrossSnapshots(t *testing.T) {
	r, _ := newTestRepo(t)
	rel := randBytes(5, 64*128<<10) // 8 MiB "relation"
	first := writeSnapshot(t, r, map[string][]byte{"base/1/16384": rel, "PG_VERSION": []byte("15\n")})
	if first.Summary.NewChunks != first.Summary.Chunks {
		t.Fatalf("first snapshot: %d of %d chunks new", first.Summary.NewChunks, first.Summary.Chunks)
	}
	same := writeSnapshot(t, r, map[string][]byte{"base/1/16384": rel, "PG_VERSION": []byte("15\n")})
	if same.Summary.NewChunks != 0 || same.Root != first.Root {
		t.Fatalf("unchanged data: %d new chunks, root %s vs %s", same.Summary.NewChunks, same.Root.Short(), first.Root.Short())
	}
	if same.Summary.StoredBytes != 0 {
		t.Fatalf("unchanged data stored %d bytes", same.Summary.StoredBytes)
	}
	// Rewrite two pages far apart: exactly two chunks are new.
	changed := bytes.Clone(rel)
	copy(changed[5*8192:], randBytes(6, 8192))
	copy(changed[40*128<<10:], randBytes(7, 8192))
	second := writeSnapshot(t, r, map[string][]byte{"base/1/16384": changed, "PG_VERSION": []byte("15\n")})
	if second.Summary.NewChunks != 2 {
		t.Fatalf("two changed pages gave %d new chunks", second.Summary.NewChunks)
	}
	if second.Summary.StoredBytes > int64(len(rel))/20 {
		t.Fatalf("stored %d bytes for two pages of %d", second.Summary.StoredBytes, len(rel))
	}
}

func TestUnchangedFileCostsNothing(t *testing.T) {
	r, _ := newTestRepo(t)
	big := randBytes(8, 30*128<<10)
	a := writeSnapshot(t, r, map[string][]byte{"base/1/big": big, "x": []byte("1")})
	b := writeSnapshot(t, r, map[string][]byte{"base/1/big": big, "x": []byte("2")})
	na, _ := r.Lookup(ctx, a, "base/1/big")
	nb, _ := r.Lookup(ctx, b, "base/1/big")
	if na.Content == nil || nb.Content == nil || *na.Content != *nb.Content {
		t.Fatal("the unchanged file's content list is not shared")
	}
	ta, _ := r.Lookup(ctx, a, "base")
	tb, _ := r.Lookup(ctx, b, "base")
	if *ta.Subtree != *tb.Subtree {
		t.Fatal("the unchanged directory's tree is not shared")
	}
}

func TestLookupErrors(t *testing.T) {
	r, _ := newTestRepo(t)
	s := writeSnapshot(t, r, map[string][]byte{"a/b": []byte("x")})
	for _, p := range []string{"nope", "a/nope", "a/b/c"} {
		if _, err := r.Lookup(ctx, s, p); !errors.Is(err, ErrFileNotFound) {
			t.Errorf("Lookup(%q): err = %v", p, err)
		}
	}
	if _, err := r.FindSnapshot(ctx, "ffffffff"); !errors.Is(err, ErrSnapshotNotFound) {
		t.Errorf("FindSnapshot: err = %v", err)
	}
}

func TestWriterRejectsBadPaths(t *testing.T) {
	r, _ := newTestRepo(t)
	w := r.NewSnapshotWriter(ctx)
	defer w.Abort()
	meta := NodeMeta{Mode: 0o600}
	if _, err := w.AddFile("a", meta, strings.NewReader("x"), SplitCDC); err != nil {
		t.Fatal(err)
	}
	if _, err := w.AddFile("a", meta, strings.NewReader("x"), SplitCDC); err == nil {
		t.Error("same path added twice")
	}
	if _, err := w.AddFile("a/b", meta, strings.NewReader("x"), SplitCDC); err == nil {
		t.Error("file used as a directory")
	}
	if _, err := w.AddFile("", meta, strings.NewReader("x"), SplitCDC); err == nil {
		t.Error("file at the root path")
	}
}

func TestWriterSurfacesReadErrors(t *testing.T) {
	r, _ := newTestRepo(t)
	w := r.NewSnapshotWriter(ctx)
	boom := errors.New("connection reset")
	_, err := w.AddFile("f", NodeMeta{}, io.MultiReader(bytes.NewReader(randBytes(1, 300000)), errReader{boom}), SplitCDC)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if _, err := w.Commit(ctx, SnapshotInfo{}); err == nil {
		t.Fatal("commit after a failed file succeeded")
	}
	snaps, _ := r.Snapshots(ctx)
	if len(snaps) != 0 {
		t.Fatal("a failed snapshot was listed")
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestSaveBlobFailureFailsCommit(t *testing.T) {
	be := &failingSaves{Backend: mem.New()}
	r := newTestRepoOn(t, be, Options{PackSize: 64 << 10})
	be.fail = true
	w := r.NewSnapshotWriter(ctx)
	w.AddFile("base/x", NodeMeta{}, bytes.NewReader(randBytes(2, 1<<20)), SplitFixed)
	if _, err := w.Commit(ctx, SnapshotInfo{}); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("commit err = %v", err)
	}
}

type failingSaves struct {
	backend.Backend
	fail bool
}

func (f *failingSaves) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if f.fail && h.Type == backend.PackFile {
		return backend.Permanent(errors.New("disk on fire"))
	}
	return f.Backend.Save(ctx, h, data)
}

func TestDeleteSnapshot(t *testing.T) {
	r, _ := newTestRepo(t)
	s := writeSnapshot(t, r, map[string][]byte{"a": []byte("x")})
	if err := r.DeleteSnapshot(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteSnapshot(ctx, s.ID); !errors.Is(err, ErrSnapshotNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := r.FindSnapshot(ctx, "latest"); !errors.Is(err, ErrSnapshotNotFound) {
		t.Fatalf("latest after delete: %v", err)
	}
}

func TestNodeModesKeepOnlyPermissions(t *testing.T) {
	r, _ := newTestRepo(t)
	w := r.NewSnapshotWriter(ctx)
	if _, err := w.AddFile("f", NodeMeta{Mode: fs.ModeDir | 0o640}, strings.NewReader("x"), SplitCDC); err != nil {
		t.Fatal(err)
	}
	s, err := w.Commit(ctx, SnapshotInfo{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := r.Lookup(ctx, s, "f")
	if err != nil || n.Mode != 0o640 {
		t.Fatalf("mode = %v, err %v", n.Mode, err)
	}
}

var _ = chunk.ID{}

// TestPackBuffersReused: buffers of uploaded packs carry the next packs,
// and every pack still holds what it was written with.
func TestPackBuffersReused(t *testing.T) {
	be := &packArrays{Backend: mem.New(), seen: map[*byte]int{}}
	r := newTestRepoOn(t, be, Options{PackSize: 64 << 10})
	files := map[string][]byte{}
	for i := range 8 {
		files[fmt.Sprintf("base/1/%d", i)] = randBytes(uint64(10+i), 512<<10)
	}
	s := writeSnapshot(t, r, files)
	be.mu.Lock()
	packs, reused := be.packs, be.reused
	be.mu.Unlock()
	if packs < 20 || reused == 0 {
		t.Fatalf("%d packs, %d of them in a buffer used before", packs, reused)
	}
	fresh, err := Open(ctx, be, []byte(testPassword), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	res, err := fresh.Check(ctx, CheckOptions{ReadData: true})
	if err != nil || len(res.Errors) > 0 {
		t.Fatalf("check: %v %+v", err, res)
	}
	s, err = fresh.LoadSnapshot(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range files {
		if !bytes.Equal(readAll(t, fresh, s, p), want) {
			t.Fatalf("%s differs", p)
		}
	}
}

// packArrays counts pack saves and how many came in an array an earlier
// pack was saved from.
type packArrays struct {
	backend.Backend
	mu            sync.Mutex
	seen          map[*byte]int
	packs, reused int
}

func (p *packArrays) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if h.Type == backend.PackFile && len(data) > 0 {
		p.mu.Lock()
		p.packs++
		if p.seen[&data[0]]++; p.seen[&data[0]] > 1 {
			p.reused++
		}
		p.mu.Unlock()
	}
	return p.Backend.Save(ctx, h, data)
}

// Init refuses a location that holds anything (a data directory, another
// tool's files); layout folders alone are fine.
func TestInitRefusesNonEmptyLocation(t *testing.T) {
	be := mem.New()
	be.Put("PG_VERSION", []byte("15\n"))
	be.Put("base/1/1259", []byte("page"))
	_, err := Init(ctx, be, InitOptions{Password: []byte("pw"), KDF: testKDF()})
	if !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), "PG_VERSION") {
		t.Fatalf("init over a data directory: %v", err)
	}
	if _, err := be.Stat(ctx, backend.Handle{Type: backend.ConfigFile}); !errors.Is(err, backend.ErrNotFound) {
		t.Fatal("a refused init wrote a config")
	}

	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "lost+found"), 0o700)
	fb, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(ctx, fb, InitOptions{Password: []byte("pw"), KDF: testKDF()}); err != nil {
		t.Fatalf("init into a folder with an empty subfolder: %v", err)
	}
	dir2 := t.TempDir()
	os.WriteFile(filepath.Join(dir2, "postgresql.conf"), []byte("port = 5432\n"), 0o600)
	fb2, _ := file.New(dir2)
	if _, err := Init(ctx, retry.New(fb2, retry.Options{}), InitOptions{Password: []byte("pw"), KDF: testKDF()}); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("init through the retry wrapper into a folder with a file: %v", err)
	}
}

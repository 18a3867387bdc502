package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/internal/atomicfile"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/mem"
	"github.com/pgvault/pgvault/repo/pack"
)

// TestIndexCacheMergesAndMaps writes many small index objects (as a WAL
// streamer does) and checks that a cached open memory-maps and merges them,
// survives a damaged cache entry, and still finds every blob.
func TestIndexCacheMergesAndMaps(t *testing.T) {
	be := mem.New()
	cache := t.TempDir()
	r := newTestRepoOn(t, be, Options{CacheDir: cache, PackSize: 64 << 10})
	want := map[string][]byte{}
	for i := range 2 * maxTables {
		name := fmt.Sprintf("0000000100000000000000%02X", i)
		seg := randBytes(uint64(i), 100<<10)
		if _, err := r.SaveWAL(ctx, 1, name, seg, false); err != nil {
			t.Fatal(err)
		}
		want[name] = seg
	}
	r.idx.mu.RLock()
	tables := len(r.idx.tables)
	r.idx.mu.RUnlock()
	if tables > maxTables {
		t.Fatalf("%d tables in a running process; want merged to <= %d", tables, maxTables)
	}
	merged, _ := filepath.Glob(filepath.Join(cache, r.cfg.ID, "index", "merged-*"))
	if len(merged) == 0 {
		t.Fatal("no merged table in the cache")
	}
	// Tables and merged tables appear whole: no temporary file stays.
	ents, _ := os.ReadDir(filepath.Join(cache, r.cfg.ID, "index"))
	for _, e := range ents {
		if atomicfile.IsTemp(e.Name()) {
			t.Errorf("temporary file left in the index cache: %s", e.Name())
		}
	}

	// A fresh process adopts the merged table instead of re-reading objects.
	r2, err := Open(ctx, be, []byte(testPassword), Options{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	r2.idx.mu.RLock()
	mapped := 0
	for _, tab := range r2.idx.tables {
		if tab.mapped != nil {
			mapped++
		}
	}
	n := len(r2.idx.tables)
	r2.idx.mu.RUnlock()
	if mapped != n || n > maxTables {
		t.Fatalf("fresh open: %d tables, %d memory-mapped", n, mapped)
	}
	for name, seg := range want {
		got, _, err := r2.LoadWAL(ctx, 1, name)
		if err != nil || !bytes.Equal(got, seg) {
			t.Fatalf("%s: %v", name, err)
		}
	}

	// Damaged cache files are ignored and re-read from the repository.
	files, _ := filepath.Glob(filepath.Join(cache, r.cfg.ID, "index", "*"))
	for _, f := range files {
		os.WriteFile(f, []byte("garbage"), 0o600)
	}
	r3, err := Open(ctx, be, []byte(testPassword), Options{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	defer r3.Close()
	for name, seg := range want {
		got, _, err := r3.LoadWAL(ctx, 1, name)
		if err != nil || !bytes.Equal(got, seg) {
			t.Fatalf("after cache damage, %s: %v", name, err)
		}
	}
}

// TestWritersCompactTheirIndex: a writer that flushes often (a WAL
// streamer) folds its index objects together instead of leaving one per
// flush; a backup leaves one at its end.
func TestWritersCompactTheirIndex(t *testing.T) {
	be := mem.New()
	r := newTestRepoOn(t, be, Options{})
	now := time.Now()
	w, err := Open(ctx, be, []byte(testPassword), Options{ConcurrentWriter: true, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	want := map[string][]byte{}
	for i := range 30 {
		name := fmt.Sprintf("%024X", i+1)
		data := randBytes(uint64(i), 64<<10)
		if _, err := w.SaveWAL(ctx, 1, name, data, false); err != nil {
			t.Fatal(err)
		}
		want[name] = data
		now = now.Add(time.Minute) // a compaction every five flushes
	}
	n := len(listNames(t, be, backend.IndexFile))
	if n > 10 {
		t.Fatalf("%d index objects after 30 flushes", n)
	}
	r2, err := Open(ctx, be, []byte(testPassword), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	for name, data := range want {
		got, _, err := r2.LoadWAL(ctx, 1, name)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s after compaction: %v", name, err)
		}
	}
	if chk := mustCheck(t, r2, true); len(chk.Errors) > 0 {
		t.Fatalf("check: %v", chk.Errors)
	}

	before := len(listNames(t, be, backend.IndexFile))
	writeSnapshot(t, r, map[string][]byte{"base/1/1": randBytes(99, 5<<20)}) // 20 packs of 256 KiB
	if after := len(listNames(t, be, backend.IndexFile)); after > before+1 {
		t.Fatalf("a backup left %d index objects", after-before)
	}
}

// gatedBackend holds every key file load until an index object is being
// loaded, and counts how many index loads run at once.
type gatedBackend struct {
	backend.Backend
	indexStarted chan struct{}
	once         sync.Once
	running, max atomic.Int32
}

func (g *gatedBackend) Load(ctx context.Context, h backend.Handle, off, n int64) ([]byte, error) {
	switch h.Type {
	case backend.KeyFile:
		select {
		case <-g.indexStarted:
		case <-time.After(10 * time.Second):
			return nil, errors.New("the key file was loaded, but no index object in the meantime")
		}
	case backend.IndexFile:
		g.once.Do(func() { close(g.indexStarted) })
		cur := g.running.Add(1)
		defer g.running.Add(-1)
		for {
			m := g.max.Load()
			if cur <= m || g.max.CompareAndSwap(m, cur) {
				break
			}
		}
		// Long enough for the other loads to start alongside.
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Backend.Load(ctx, h, off, n)
}

// TestOpenFetchesIndexAlongsideKey: a first open (empty cache) downloads
// the index objects while the key is derived, several at a time, and
// finds every blob.
func TestOpenFetchesIndexAlongsideKey(t *testing.T) {
	be := mem.New()
	r := newTestRepoOn(t, be, Options{PackSize: 64 << 10})
	want := map[string][]byte{}
	for i := range 10 {
		name := fmt.Sprintf("0000000100000000000000%02X", i)
		seg := randBytes(uint64(i), 10<<10)
		if _, err := r.SaveWAL(ctx, 1, name, seg, false); err != nil {
			t.Fatal(err)
		}
		want[name] = seg
	}
	var objects int
	be.List(ctx, backend.IndexFile, func(backend.FileInfo) error { objects++; return nil })
	if objects < 2 {
		t.Fatalf("%d index objects; the test needs several", objects)
	}

	g := &gatedBackend{Backend: be, indexStarted: make(chan struct{})}
	r2, err := Open(ctx, g, []byte(testPassword), Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if g.max.Load() < 2 {
		t.Errorf("at most %d index object loads at once, want several", g.max.Load())
	}
	for name, seg := range want {
		got, _, err := r2.LoadWAL(ctx, 1, name)
		if err != nil || !bytes.Equal(got, seg) {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// TestOpenIndexFetchFailure: an index object that cannot be read fails the
// open with its name, and a wrong password still says so.
func TestOpenIndexFetchFailure(t *testing.T) {
	be := mem.New()
	r := newTestRepoOn(t, be, Options{})
	if _, err := r.SaveWAL(ctx, 1, "000000010000000000000001", randBytes(1, 4096), false); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, be, []byte("wrong"), Options{}); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	var name string
	be.List(ctx, backend.IndexFile, func(fi backend.FileInfo) error { name = fi.Name; return nil })
	be.Remove(ctx, backend.Handle{Type: backend.IndexFile, Name: name})
	be.Save(ctx, backend.Handle{Type: backend.IndexFile, Name: name}, []byte("not sealed"))
	_, err := Open(ctx, be, []byte(testPassword), Options{CacheDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "index "+name[:8]) {
		t.Fatalf("open with a damaged index object: %v", err)
	}
}

// A reader opened before another process stored a blob finds it: the WAL a
// streamer stores while a mount serves it is named by catalogue entries
// newer than the mount's index.
func TestLoadBlobStoredByAnotherProcess(t *testing.T) {
	writer, be := newTestRepo(t)
	reader, err := Open(ctx, be, []byte(testPassword), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	data := []byte("a WAL chunk stored after the reader opened")
	id, _, err := writer.SaveBlob(ctx, pack.DataBlob, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := writer.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := reader.LoadBlob(ctx, id)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("LoadBlob of a blob stored since Open: %q, %v", got, err)
	}
	// A blob no index names is still an error.
	if _, err := reader.LoadBlob(ctx, chunk.ID{1}); !errors.Is(err, ErrBlobNotFound) {
		t.Fatalf("LoadBlob of an unknown blob: %v", err)
	}
}

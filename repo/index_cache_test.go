package repo

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/mem"
)

// TestIndexCacheMergesAndMaps writes many small index objects (as a WAL
// streamer does) and checks that a cached open memory-maps and merges them,
// survives a damaged cache entry, and still finds every blob.
func TestIndexCacheMergesAndMaps(t *testing.T) {
	be := mem.New()
	cache := t.TempDir()
	r := TestRepositoryOn(t, be, Options{CacheDir: cache, PackSize: 64 << 10})
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

	// A fresh process adopts the merged table instead of re-reading objects.
	r2, err := Open(ctx, be, []byte(TestPassword), Options{CacheDir: cache})
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
	r3, err := Open(ctx, be, []byte(TestPassword), Options{CacheDir: cache})
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
	r := TestRepositoryOn(t, be, Options{})
	now := time.Now()
	w, err := Open(ctx, be, []byte(TestPassword), Options{ConcurrentWriter: true, Now: func() time.Time { return now }})
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
	r2, err := Open(ctx, be, []byte(TestPassword), Options{})
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

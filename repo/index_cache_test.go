package repo

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

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

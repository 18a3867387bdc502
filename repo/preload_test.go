package repo

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/mem"
)

// countingLoads counts pack reads.
type countingLoads struct {
	backend.Backend
	packLoads atomic.Int64
}

func (c *countingLoads) Load(ctx context.Context, h backend.Handle, off, n int64) ([]byte, error) {
	if h.Type == backend.PackFile {
		c.packLoads.Add(1)
	}
	return c.Backend.Load(ctx, h, off, n)
}

// TestPreloadReadsRunsOfBlobs: blobs stored together are preloaded with
// one request per run, each byte-exact in the cache; cached blobs are not
// planned again; a damaged blob is left out for the read that needs it.
func TestPreloadReadsRunsOfBlobs(t *testing.T) {
	be := mem.New()
	w := newTestRepoOn(t, be, Options{PackSize: 1 << 20})
	files := map[string][]byte{}
	for i := range 60 {
		files[fmt.Sprintf("global/%d", 1200+i)] = randBytes(uint64(i+1), 8192)
	}
	s := writeSnapshot(t, w, files)
	w.Close()

	cb := &countingLoads{Backend: be}
	r, err := Open(ctx, cb, []byte(testPassword), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var ids []chunk.ID
	want := map[chunk.ID][]byte{}
	for p, data := range files {
		f, err := r.OpenFile(ctx, s, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range f.Chunks() {
			ids = append(ids, c.ID)
			want[c.ID] = data
		}
	}
	packs := map[chunk.ID]bool{}
	for _, id := range ids {
		e, _ := r.LookupBlob(id)
		packs[e.Pack] = true
	}
	// One blob is damaged in storage.
	damaged := ids[len(ids)/2]
	e, _ := r.LookupBlob(damaged)
	be.Corrupt(backend.Handle{Type: backend.PackFile, Name: e.Pack.String()}, int(e.Offset)+int(e.Length)/2)

	before := cb.packLoads.Load()
	runs := r.PlanPreload(ids)
	if len(runs) > len(packs) {
		t.Fatalf("%d blobs in %d packs planned as %d runs", len(ids), len(packs), len(runs))
	}
	for _, run := range runs {
		if _, err := r.PreloadRun(ctx, run); err != nil {
			t.Fatal(err)
		}
	}
	if got := cb.packLoads.Load() - before; got != int64(len(runs)) {
		t.Fatalf("%d runs read with %d requests", len(runs), got)
	}
	for _, id := range ids {
		got, ok := r.CachedBlob(id)
		switch {
		case id == damaged && ok:
			t.Fatal("a damaged blob was cached")
		case id != damaged && !ok:
			t.Fatalf("blob %s not cached", id.Short())
		case ok && !bytes.Equal(got, want[id]):
			t.Fatalf("blob %s cached with other bytes", id.Short())
		}
	}
	if again := r.PlanPreload(ids); len(again) != 1 || len(again[0].blobs) != 1 || again[0].blobs[0].ID != damaged {
		t.Fatalf("after the preload, planned %v; want only the damaged blob", again)
	}
}

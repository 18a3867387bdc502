package repo

import (
	"bytes"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/repo/backend/mem"
)

// TestWriteToReadsRuns: a whole-file read asks for the chunks stored close
// together in one pack with a request or two per run (runChunks,
// runBytes), not one per chunk; damage inside a run is still an error,
// never wrong bytes.
func TestWriteToReadsRuns(t *testing.T) {
	be := mem.New()
	r := newTestRepoOn(t, be, Options{}) // 16 MiB packs: runs are not cut by packs
	const p = "base/1/16384"
	data := randBytes(11, 40*128<<10) // incompressible: runBytes ends each run
	s := writeSnapshot(t, r, map[string][]byte{p: data})

	counted := &countingLoads{Backend: be}
	fresh, err := Open(ctx, counted, []byte(testPassword), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	f, err := fresh.OpenFile(ctx, s, p)
	if err != nil {
		t.Fatal(err)
	}
	counted.packLoads.Store(0)
	var buf bytes.Buffer
	if _, err := f.WriteTo(ctx, &buf, 4); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data) {
		t.Fatal("WriteTo returned other bytes")
	}
	runs := f.runs()
	// A run's chunks are in pack order nearly, not exactly, in file
	// order (sealing runs on every core): its range may end at
	// preloadRunMax and take a second request.
	if n := counted.packLoads.Load(); n > 2*int64(len(runs)) || n >= int64(len(f.Chunks()))/4 {
		t.Fatalf("%d chunks read with %d pack requests in %d runs", len(f.Chunks()), n, len(runs))
	}
	for _, run := range runs {
		if run.end-run.start > runChunks || f.offsets[run.end]-f.offsets[run.start] > runBytes {
			t.Fatalf("run %v is over the bounds", run)
		}
	}

	// One flipped bit in the biggest pack: the run fails, the chunks are
	// read again one by one, and the damaged one is an error.
	damageBiggestPack(t, be)
	damaged, err := Open(ctx, be, []byte(testPassword), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer damaged.Close()
	f, err = damaged.OpenFile(ctx, s, p)
	if err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if _, err := f.WriteTo(ctx, &buf, 4); err == nil || !strings.Contains(err.Error(), "16384") {
		t.Fatalf("a damaged chunk: %v", err)
	}
}

// ReadChunks (hydration, copy-on-read) reads a range of chunks with a
// request per pack run, not per chunk, and leaves the cache alone.
func TestReadChunks(t *testing.T) {
	be := mem.New()
	r := newTestRepoOn(t, be, Options{})
	const p = "base/1/16385"
	data := randBytes(12, 24*128<<10)
	s := writeSnapshot(t, r, map[string][]byte{p: data})
	counted := &countingLoads{Backend: be}
	fresh, err := Open(ctx, counted, []byte(testPassword), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	f, err := fresh.OpenFile(ctx, s, p)
	if err != nil {
		t.Fatal(err)
	}
	n := len(f.Chunks())
	for _, c := range []struct{ first, end int }{{0, n}, {1, n / 2}, {n - 1, n}, {3, 3}} {
		counted.packLoads.Store(0)
		got, err := f.ReadChunks(ctx, c.first, c.end, nil)
		if err != nil {
			t.Fatalf("chunks [%d, %d): %v", c.first, c.end, err)
		}
		if want := data[f.ChunkOffset(c.first):f.ChunkOffset(c.end)]; !bytes.Equal(got, want) {
			t.Fatalf("chunks [%d, %d): other bytes", c.first, c.end)
		}
		// preloadRunMax (4 MiB) bounds a request: a run's chunks lie
		// nearly in file order, so a second request may be needed.
		if k := counted.packLoads.Load(); k > int64(c.end-c.first+7)/8+1 {
			t.Errorf("chunks [%d, %d) took %d requests", c.first, c.end, k)
		}
		if _, ok := f.CachedChunk(c.first); ok && c.end > c.first {
			t.Errorf("chunk %d was cached", c.first)
		}
	}
	for _, c := range []struct{ first, end int }{{-1, 1}, {0, n + 1}, {2, 1}} {
		if _, err := f.ReadChunks(ctx, c.first, c.end, nil); err == nil {
			t.Errorf("chunks [%d, %d) of %d: no error", c.first, c.end, n)
		}
	}
}

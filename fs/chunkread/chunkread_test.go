package chunkread

import (
	"bytes"
	"context"
	"math/rand"
	"testing"
	"time"

	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/repotest"
)

// coldFile stores data as a fixed-chunked file and opens it through a
// second repository handle whose blob cache is empty.
func coldFile(t *testing.T, data []byte) (*repo.File, *repo.Repository) {
	t.Helper()
	ctx := context.Background()
	r, be := repotest.New(t)
	w := r.NewSnapshotWriter(ctx)
	meta := repo.NodeMeta{Mode: 0o700, ModTime: time.Unix(0, 0)}
	if err := w.AddDir("", meta); err != nil {
		t.Fatal(err)
	}
	if _, err := w.AddFile("big", meta, bytes.NewReader(data), repo.SplitFixed); err != nil {
		t.Fatal(err)
	}
	s, err := w.Commit(ctx, repo.SnapshotInfo{Kind: "basebackup"})
	if err != nil {
		t.Fatal(err)
	}
	cold, err := repo.Open(ctx, be, []byte(repotest.Password), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cold.Close() })
	snap, err := cold.LoadSnapshot(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	n, err := cold.Lookup(ctx, snap, "big")
	if err != nil {
		t.Fatal(err)
	}
	f, err := cold.OpenNode(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	return f, cold
}

// TestReadPrefetchesSequentialReaders: a sequential reader gets the
// chunks ahead of it loaded in the background; a jump starts the pattern
// over; without a Prefetcher, Read only reads.
func TestReadPrefetchesSequentialReaders(t *testing.T) {
	ctx := context.Background()
	data := make([]byte, 2<<20)
	rand.New(rand.NewSource(1)).Read(data)
	f, r := coldFile(t, data)
	if len(f.Chunks()) < 8 {
		t.Fatalf("%d chunks: the test needs more", len(f.Chunks()))
	}
	p := NewPrefetcher(ctx, r, 32, 4)
	var ra Readahead
	buf := make([]byte, 64<<10)
	const upto = 256 << 10
	for off := int64(0); off < upto; off += int64(len(buf)) {
		n, err := Read(ctx, p, &ra, f, buf, off)
		if err != nil || !bytes.Equal(buf[:n], data[off:off+int64(n)]) {
			t.Fatalf("read at %d: %d bytes, %v", off, n, err)
		}
	}
	p.loads.Wait()
	if p.issued.Load() == 0 || p.skipped.Load() != 0 {
		t.Fatalf("issued %d, skipped %d prefetches", p.issued.Load(), p.skipped.Load())
	}
	next := f.ChunkAt(upto)
	if _, ok := f.CachedChunk(next); !ok {
		t.Fatalf("chunk %d, next for the sequential reader, was not prefetched", next)
	}
	if _, ok := f.CachedChunk(next + p.maxAhead + 1); ok {
		t.Fatalf("prefetched past the window of %d chunks", p.maxAhead)
	}

	// A jump: the streak starts over.
	if _, err := Read(ctx, p, &ra, f, buf, int64(len(data))-int64(len(buf))); err != nil {
		t.Fatal(err)
	}
	ra.mu.Lock()
	streak := ra.streak
	ra.mu.Unlock()
	if streak != 0 {
		t.Fatalf("streak %d after a jump", streak)
	}

	// No prefetcher (a one-off read): just the bytes.
	if n, err := Read(ctx, nil, &Readahead{}, f, buf, 10); err != nil || !bytes.Equal(buf[:n], data[10:10+n]) {
		t.Fatalf("read without a prefetcher: %d, %v", n, err)
	}
}

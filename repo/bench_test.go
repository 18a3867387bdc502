package repo

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/backend/mem"
	"github.com/pgvault/pgvault/repo/index"
)

// BenchmarkSnapshotWriter is the whole backup pipeline on page-shaped data:
// split, ID, zstd, AES-GCM, pack, upload (to memory), on every core.
func BenchmarkSnapshotWriter(b *testing.B) {
	data := chunk.TestPages(16384, 1) // 128 MiB
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		b.StopTimer()
		be := mem.New()
		r := newTestRepoOn(b, be, Options{})
		b.StartTimer()
		w := r.NewSnapshotWriter(ctx)
		for i := range 4 {
			part := data[i*len(data)/4 : (i+1)*len(data)/4]
			if _, err := w.AddFile(fmt.Sprintf("base/1/%d", 16384+i), NodeMeta{Mode: 0o600}, bytes.NewReader(part), SplitFixed); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := w.Commit(ctx, SnapshotInfo{Kind: "files"}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		r.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(runtime.GOMAXPROCS(0)), "cores")
}

// BenchmarkReadAt8KWarm reads random 8 KiB ranges of a stored relation
// file with the chunk cache warm: the mount's hot path minus FUSE.
func BenchmarkReadAt8KWarm(b *testing.B) {
	r, _ := newTestRepo(b)
	data := chunk.TestPages(2048, 2) // 16 MiB
	w := r.NewSnapshotWriter(ctx)
	w.AddFile("base/1/16384", NodeMeta{}, bytes.NewReader(data), SplitFixed)
	s, err := w.Commit(ctx, SnapshotInfo{})
	if err != nil {
		b.Fatal(err)
	}
	f, err := r.OpenFile(ctx, s, "base/1/16384")
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 8192)
	for off := int64(0); off < int64(len(data)); off += 8192 {
		f.ReadAt(buf, off) // warm
	}
	rng := rand.New(rand.NewPCG(1, 1))
	b.SetBytes(8192)
	for b.Loop() {
		off := int64(rng.IntN(len(data)/8192)) * 8192
		if _, err := f.ReadAtContext(ctx, buf, off); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIndexLookup is a lookup in a one-million-entry table, and
// reports the table's bytes per entry.
func BenchmarkIndexLookup(b *testing.B) {
	const n = 1 << 20
	rng := rand.New(rand.NewPCG(3, 3))
	packs := []index.PackInfo{{ID: chunk.ID{1}, Size: 1 << 24, Type: 1}}
	entries := make([]index.Entry, n)
	for i := range entries {
		for j := range entries[i].ID {
			entries[i].ID[j] = byte(rng.Uint32())
		}
		entries[i].Pack, entries[i].Length, entries[i].PlainLen = packs[0].ID, 100, 100
	}
	data, err := index.Encode(nil, packs, entries)
	if err != nil {
		b.Fatal(err)
	}
	tab, err := index.Decode(data)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, ok := tab.Lookup(entries[rng.IntN(n)].ID); !ok {
			b.Fatal("not found")
		}
	}
	b.ReportMetric(float64(len(data))/n, "bytes/entry")
}

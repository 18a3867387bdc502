package repo

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/mem"
)

// packLoads counts the requests that read packs.
type packLoads struct {
	backend.Backend
	n atomic.Int64
}

func (p *packLoads) Load(ctx context.Context, h backend.Handle, off, length int64) ([]byte, error) {
	if h.Type == backend.PackFile {
		p.n.Add(1)
	}
	return p.Backend.Load(ctx, h, off, length)
}

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

	counted := &packLoads{Backend: be}
	fresh, err := Open(ctx, counted, []byte(testPassword), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	f, err := fresh.OpenFile(ctx, s, p)
	if err != nil {
		t.Fatal(err)
	}
	counted.n.Store(0)
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
	if n := counted.n.Load(); n > 2*int64(len(runs)) || n >= int64(len(f.Chunks()))/4 {
		t.Fatalf("%d chunks read with %d pack requests in %d runs", len(f.Chunks()), n, len(runs))
	}
	for _, run := range runs {
		if run.end-run.start > runChunks || f.offsets[run.end]-f.offsets[run.start] > runBytes {
			t.Fatalf("run %v is over the bounds", run)
		}
	}

	// One flipped bit in the biggest pack: the run fails, the chunks are
	// read again one by one, and the damaged one is an error.
	var biggest backend.FileInfo
	be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		if fi.Size > biggest.Size {
			biggest = fi
		}
		return nil
	})
	h := backend.Handle{Type: backend.PackFile, Name: biggest.Name}
	packed, err := be.Load(ctx, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	packed[len(packed)/3] ^= 0x40
	be.Put(h.Path(), packed)
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

package fs

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/pgvault/pgvault/fs/overlay"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/repotest"
)

// walLoads counts loads of WAL catalogue entries, by name.
type walLoads struct {
	backend.Backend
	mu sync.Mutex
	n  map[string]int
}

func (w *walLoads) Load(ctx context.Context, h backend.Handle, off, n int64) ([]byte, error) {
	if h.Type == backend.WALFile {
		w.mu.Lock()
		w.n[h.Name]++
		w.mu.Unlock()
	}
	return w.Backend.Load(ctx, h, off, n)
}

func (w *walLoads) count(name string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n[name]
}

// TestWALEntriesAsked: the WAL view resolves names through the overlay's
// catalogue cache: a complete segment's entry is read from the repository
// once however often recovery asks, a missing history file once for a
// while; a .partial and a missing segment (and its .partial) are asked
// every time.
func TestWALEntriesAsked(t *testing.T) {
	ctx := context.Background()
	r, s, be := testSnapshotOn(t, sampleTree())
	const seg, part, missing, history = "000000010000000000000002", "000000010000000000000003", "000000010000000000000004", "00000002.history"
	if _, err := r.SaveWAL(ctx, 1, seg, wal.FakeSegment(1, 0x2000000, 16<<20, 7), false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SaveWAL(ctx, 1, part+".partial", wal.FakeSegment(1, 0x3000000, 16<<20, 7)[:1<<20], true); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	wl := &walLoads{Backend: be, n: map[string]int{}}
	fresh, err := repo.Open(ctx, wl, []byte(repotest.Password), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	now := time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)
	ov, err := overlay.Open(ctx, fresh, s, overlay.Options{Scratch: t.TempDir(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer ov.Close(ctx)
	d := &walServeDir{ov: ov, segSize: 16 << 20, served: &servedSegments{}}

	for range 3 {
		if _, _, err := d.resolve(ctx, seg); err != nil {
			t.Fatal(err)
		}
		if _, _, err := d.resolve(ctx, part); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{missing, history} {
			if _, _, err := d.resolve(ctx, name); !errors.Is(err, repo.ErrWALNotFound) {
				t.Fatalf("%s: err = %v, want not found", name, err)
			}
		}
	}
	// The copy PostgreSQL made of the segment reads through the entry too.
	if _, err := ov.LoadWALFile(ctx, 1, seg); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{
		seg:               1,
		part + ".partial": 3,
		missing:           3, // and as many lookups of its .partial
		history:           1, // asked again only after a while (fs/overlay tests that)
	} {
		if got := wl.count("00000001/"+name) + wl.count("00000002/"+name); got != want {
			t.Errorf("%s: %d loads, want %d", name, got, want)
		}
	}
}

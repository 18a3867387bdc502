package fstest

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/repotest"
)

// The WAL files of NewWAL's repository, as recovery asks for them.
const (
	Segment = "000000010000000000000002" // a complete segment, stored
	Partial = "000000010000000000000003" // stored as Partial+".partial" only
	Missing = "000000010000000000000004" // not stored, nor its .partial
	History = "00000002.history"         // not stored
)

// WAL is a repository with a snapshot and WAL, for the tests of how the
// WAL view asks for catalogue entries.
type WAL struct {
	Repo     *repo.Repository // has loaded no WAL catalogue entry yet
	Snapshot *repo.Snapshot   // the sample tree
	Loads    *WALLoads        // under Repo
	Now      time.Time        // what Clock tells; a test moves it on
}

// Clock returns w.Now, for an overlay's Options.Now.
func (w *WAL) Clock() time.Time { return w.Now }

// NewWAL stores the sample tree as a snapshot, and Segment and the
// first MiB of Partial as WAL, then reopens the repository on a backend
// that counts the loads of WAL catalogue entries, as a fresh mount would
// open it.
func NewWAL(t testing.TB) *WAL {
	t.Helper()
	ctx := context.Background()
	r, s, be := Store(t, SampleTree())
	if _, err := r.SaveWAL(ctx, 1, Segment, wal.FakeSegment(1, 0x2000000, 16<<20, 7), false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SaveWAL(ctx, 1, Partial+".partial", wal.FakeSegment(1, 0x3000000, 16<<20, 7)[:1<<20], true); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	loads := &WALLoads{Backend: be, n: map[string]int{}}
	fresh, err := repo.Open(ctx, loads, []byte(repotest.Password), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fresh.Close() })
	return &WAL{Repo: fresh, Snapshot: s, Loads: loads, Now: time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)}
}

// WALLoads is a backend that counts the loads of WAL catalogue entries,
// by name; it may be used concurrently.
type WALLoads struct {
	backend.Backend
	mu sync.Mutex
	n  map[string]int // by handle name: "<timeline>/<file name>"
}

var _ backend.Backend = (*WALLoads)(nil)

// Load counts a load of a WAL catalogue entry and passes it on.
func (w *WALLoads) Load(ctx context.Context, h backend.Handle, off, n int64) ([]byte, error) {
	if h.Type == backend.WALFile {
		w.mu.Lock()
		w.n[h.Name]++
		w.mu.Unlock()
	}
	return w.Backend.Load(ctx, h, off, n)
}

// Count returns how often the entry of the WAL file name was loaded, on
// any timeline.
func (w *WALLoads) Count(name string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for h, c := range w.n {
		if strings.HasSuffix(h, "/"+name) {
			n += c
		}
	}
	return n
}

// Check reports an error on t for every WAL file of want whose entry was
// not loaded exactly that many times.
func (w *WALLoads) Check(t testing.TB, want map[string]int) {
	t.Helper()
	for name, n := range want {
		if got := w.Count(name); got != n {
			t.Errorf("%s: %d loads, want %d", name, got, n)
		}
	}
}

package fs

import (
	"context"
	"testing"

	"github.com/pgvault/pgvault/fs/fstest"
)

// TestRecoveringClosesOnWALLookup: the WAL view's first lookup tells
// that recovery has started.
func TestRecoveringClosesOnWALLookup(t *testing.T) {
	r, s := fstest.Snapshot(t, fstest.SampleTree())
	ov := openTestOverlay(t, r, s, t.TempDir())
	defer ov.Close(context.Background())
	select {
	case <-ov.Recovering():
		t.Fatal("recovering before any WAL request")
	default:
	}
	d := &walServeDir{ov: ov, segSize: 16 << 20, served: &servedSegments{}}
	d.Lookup(context.Background(), "00000002.history", nil)
	select {
	case <-ov.Recovering():
	default:
		t.Fatal("a WAL lookup did not mark recovery as started")
	}
}

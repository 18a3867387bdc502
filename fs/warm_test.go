package fs

import (
	"context"
	"testing"
)

// TestRecoveringClosesOnWALLookup: the WAL view's first lookup tells
// that recovery has started.
func TestRecoveringClosesOnWALLookup(t *testing.T) {
	r, s := testSnapshot(t, sampleTree())
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

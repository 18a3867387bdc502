package backup

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/stream/wal"
)

func TestStreamedWALWait(t *testing.T) {
	ctx := context.Background()
	r, _ := repo.TestRepository(t)
	if streamerActive(ctx, r) {
		t.Fatal("no streamer, yet one is active")
	}
	l, err := r.Lock(ctx, repo.LockConcurrent, "wal stream")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	if !streamerActive(ctx, r) {
		t.Fatal("the streamer's lock is not seen")
	}

	const seg = 16 << 20
	stop := pglogrepl.LSN(3<<24 + 5000) // 5000 bytes into segment 3
	name := wal.SegmentOf(1, stop, seg).Name(seg)
	// Not there yet: a short wait ends with a warning that says why.
	err = waitForStreamedWAL(ctx, r, 1, stop, seg, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), name) {
		t.Fatalf("wait without WAL: %v", err)
	}
	// A partial that ends before the stop position is not enough...
	r.SaveWAL(ctx, 1, name+".partial", make([]byte, 4000), true)
	if err := waitForStreamedWAL(ctx, r, 1, stop, seg, 100*time.Millisecond); err == nil {
		t.Fatal("a partial short of the stop position satisfied the wait")
	}
	// ...one that reaches past it is.
	done := make(chan error, 1)
	go func() { done <- waitForStreamedWAL(ctx, r, 1, stop, seg, 10*time.Second) }()
	time.Sleep(100 * time.Millisecond)
	r.SaveWAL(ctx, 1, name+".partial", make([]byte, 6000), true)
	if err := <-done; err != nil {
		t.Fatalf("wait with the WAL stored: %v", err)
	}
}

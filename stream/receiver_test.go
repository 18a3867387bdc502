package stream

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/repotest"
)

const testSeg = 1 << 20 // 1 MiB segments keep tests fast

func segData(seed byte, n int) []byte { return bytes.Repeat([]byte{seed}, n) }

func TestFindRepoPosition(t *testing.T) {
	ctx := context.Background()
	r, _ := repotest.New(t)
	pos, err := FindRepoPosition(ctx, r, testSeg)
	if err != nil || pos.LSN != 0 {
		t.Fatalf("empty repository: %+v, %v", pos, err)
	}
	seg3 := wal.Segment{Timeline: 1, No: 3}
	r.SaveWAL(ctx, 1, seg3.Name(testSeg), segData(3, testSeg), false)
	pos, _ = FindRepoPosition(ctx, r, testSeg)
	if pos.Timeline != 1 || pos.LSN != seg3.Next().Start(testSeg) || pos.Partial {
		t.Fatalf("after a complete segment: %+v", pos)
	}
	seg4 := seg3.Next()
	r.SaveWAL(ctx, 1, seg4.Name(testSeg)+".partial", segData(4, 5000), true)
	pos, _ = FindRepoPosition(ctx, r, testSeg)
	if pos.LSN != seg4.Start(testSeg)+5000 || !pos.Partial {
		t.Fatalf("after a partial: %+v", pos)
	}
	// A newer timeline wins even at a lower segment.
	r.SaveWAL(ctx, 2, "00000002.history", []byte("1\t0/300000\tbecause\n"), false)
	seg3b := wal.Segment{Timeline: 2, No: 3}
	r.SaveWAL(ctx, 2, seg3b.Name(testSeg)+".partial", segData(5, 100), true)
	pos, _ = FindRepoPosition(ctx, r, testSeg)
	if pos.Timeline != 2 || pos.LSN != seg3b.Start(testSeg)+100 {
		t.Fatalf("newer timeline: %+v", pos)
	}
}

// TestFlusherOrder queues partials and complete segments the way the
// receive loop does and checks what ends up in the repository.
func TestFlusherOrder(t *testing.T) {
	ctx := context.Background()
	r, _ := repotest.New(t)
	f := newFlusher(r, 1, testSeg, nil)
	f.log = discardLogger()
	go f.run(ctx)
	s5 := wal.Segment{Timeline: 1, No: 5}
	start := s5.Start(testSeg)
	f.queuePartial(5, segData(1, 4096), start+4096)
	f.queuePartial(5, segData(1, 8192), start+8192) // replaces the first
	full := segData(1, testSeg)
	f.queueComplete(5, full, start+testSeg)
	f.queuePartial(6, segData(2, 100), start+testSeg+100)
	f.close()
	var last pglogrepl.LSN
	for end := range f.flushed {
		if end <= last {
			t.Fatalf("flushed positions not increasing: %s after %s", end, last)
		}
		last = end
	}
	if err := f.err(); err != nil {
		t.Fatal(err)
	}
	if last != start+testSeg+100 {
		t.Fatalf("last flushed %s, want %s", last, start+testSeg+100)
	}
	got, _, err := r.LoadWAL(ctx, 1, s5.Name(testSeg))
	if err != nil || !bytes.Equal(got, full) {
		t.Fatalf("complete segment: %v", err)
	}
	if _, err := r.LoadWALFile(ctx, 1, s5.Name(testSeg)+".partial"); !errors.Is(err, repo.ErrWALNotFound) {
		t.Fatalf("the partial of a completed segment was left behind: %v", err)
	}
	if wf, err := r.LoadWALFile(ctx, 1, s5.Next().Name(testSeg)+".partial"); err != nil || wf.Size != 100 {
		t.Fatalf("next partial: %+v %v", wf, err)
	}
}

func TestStatusLag(t *testing.T) {
	s := Status{Flushed: 100, ServerEnd: 350}
	if s.LagBytes() != 250 {
		t.Fatalf("lag %d", s.LagBytes())
	}
	s.Flushed = 400
	if s.LagBytes() != 0 {
		t.Fatalf("lag %d", s.LagBytes())
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

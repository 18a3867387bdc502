package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// DefaultPrefetch is how many segments restore_command keeps fetched ahead
// of recovery unless told otherwise.
const DefaultPrefetch = 8

// PrefetchOptions tune Prefetch.
type PrefetchOptions struct {
	// After is the segment recovery asked for last, the start when the
	// spool records nothing newer (Spool.Want); SegmentSize is its size.
	After       string
	SegmentSize uint64
	// Count is how many segments after the wanted one to keep spooled;
	// 0 means DefaultPrefetch.
	Count int
	// Parallel downloads at once; 0 means min(Count, 4).
	Parallel int
	// Idle ends Prefetch when recovery has asked for nothing new for this
	// long and the window is full; 0 means 3 s.
	Idle time.Duration
	// Poll is how often the spool's want file is read; 0 means 20 ms
	// (a small file: a read costs microseconds, and restore_command may
	// take a spooled segment every 20 ms).
	Poll time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives what goes wrong with single segments; nil discards.
	Logger *slog.Logger
}

func (o *PrefetchOptions) fill() {
	if o.Count <= 0 {
		o.Count = DefaultPrefetch
	}
	if o.Parallel <= 0 {
		o.Parallel = min(o.Count, 4)
	}
	if o.Idle <= 0 {
		o.Idle = 3 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = 20 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// PrefetchResult counts what Prefetch did.
type PrefetchResult struct {
	Fetched int   `json:"fetched"`
	Bytes   int64 `json:"bytes"`
	// Missing counts segments of a window that the repository did not
	// hold complete (the end of the archive) or that failed verification.
	Missing int `json:"missing"`
}

// Prefetch keeps the Count complete segments that follow the segment
// recovery asked for last (the spool's want file, else opts.After) on the
// same timeline downloaded, verified, in the spool, up to Parallel at a
// time, nearest first. It follows the want file as restore_command moves
// it on, starting the next download as soon as one ends (a window that
// refilled only once a whole batch was in made recovery wait for the
// batch's slowest segment), and returns when the window is full (or ends
// at the end of the archive) and recovery has asked for nothing new for
// opts.Idle, when ctx ends, or when the spool cannot be written. Segments
// stored only as ".partial" are not spooled: restore_command serves those
// itself, padded, from the repository.
//
// The caller holds the spool's prefetch lock (Spool.LockPrefetch).
func Prefetch(ctx context.Context, r *repo.Repository, s *Spool, opts PrefetchOptions) (*PrefetchResult, error) {
	opts.fill()
	if _, err := wal.ParseSegment(opts.After, opts.SegmentSize); err != nil {
		return nil, fmt.Errorf("prefetch after: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	type outcome struct {
		name  string
		bytes int64
		err   error
	}
	res := &PrefetchResult{}
	done := make(chan outcome, opts.Parallel)
	inFlight := map[string]bool{}
	missing := map[string]bool{} // in the current window; cleared when it moves
	want, segSize := opts.After, opts.SegmentSize
	if n, sz, ok := s.Wanted(); ok {
		want, segSize = n, sz
	}
	lastChange := opts.Now()
	poll := time.NewTicker(opts.Poll)
	defer poll.Stop()
	for {
		seg, err := wal.ParseSegment(want, segSize)
		if err != nil {
			return res, err
		}
		full := true // every segment of the window spooled or known missing
		for i, next := 0, seg.Next(); i < opts.Count; i, next = i+1, next.Next() {
			name := next.Name(segSize)
			if missing[name] || s.Has(name) {
				continue
			}
			full = false
			if inFlight[name] || len(inFlight) >= opts.Parallel {
				continue
			}
			inFlight[name] = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, err := prefetchOne(ctx, r, s, name)
				done <- outcome{name, n, err}
			}()
		}
		if full && len(inFlight) == 0 && opts.Now().Sub(lastChange) > opts.Idle {
			return res, nil
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case o := <-done:
			delete(inFlight, o.name)
			switch {
			case o.err == nil:
				res.Fetched++
				res.Bytes += o.bytes
			case errors.Is(o.err, errSpoolWrite):
				return res, o.err // the next ones would fail the same
			case ctx.Err() != nil:
				return res, ctx.Err()
			case errors.Is(o.err, errPassed):
			default:
				if !errors.Is(o.err, repo.ErrWALNotFound) {
					opts.Logger.Warn("prefetch: segment not spooled", "segment", o.name, "err", o.err)
				}
				missing[o.name] = true
				res.Missing++
			}
		case <-poll.C:
		}
		if n, sz, ok := s.Wanted(); ok && (n != want || sz != segSize) {
			want, segSize = n, sz
			lastChange = opts.Now()
			clear(missing)
		}
	}
}

// errPassed: restore_command fetched the segment itself meanwhile.
var errPassed = errors.New("recovery has passed it")

var errSpoolWrite = errors.New("cannot write the spool")

func prefetchOne(ctx context.Context, r *repo.Repository, s *Spool, name string) (int64, error) {
	if s.Passed(name) {
		return 0, errPassed
	}
	defer s.startFetching(name)()
	data, _, err := r.LoadWAL(ctx, wal.NameTimeline(name), name)
	if err != nil {
		return 0, err
	}
	if _, err := wal.VerifyFile(name, data); err != nil {
		return 0, err
	}
	if err := s.Put(name, data); err != nil {
		return 0, fmt.Errorf("%w: %w", errSpoolWrite, err)
	}
	return int64(len(data)), nil
}

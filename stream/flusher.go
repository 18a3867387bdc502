package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// flusher writes segments to the repository in order, off the receive
// path: complete segments as they fill, and the newest partial segment.
type flusher struct {
	r       *repo.Repository
	tli     uint32
	segSize uint64
	log     *slog.Logger

	completes chan flushJob
	flushed   chan pglogrepl.LSN // ends of durable WAL, in order; closed when done

	// checkedPartial is 1 + the segment whose stored partial this flusher
	// has compared with its own (0: none yet); see write.
	checkedPartial uint64

	mu      sync.Mutex
	partial *flushJob
	signal  chan struct{}
	closed  bool
	failErr error
}

type flushJob struct {
	segNo uint64
	data  []byte
	end   pglogrepl.LSN
}

func newFlusher(r *repo.Repository, tli uint32, segSize uint64, log *slog.Logger) *flusher {
	return &flusher{
		r: r, tli: tli, segSize: segSize, log: log,
		completes: make(chan flushJob, 2),
		flushed:   make(chan pglogrepl.LSN, 16),
		signal:    make(chan struct{}, 1),
	}
}

// queueComplete hands over a full segment (blocking while two are pending,
// which slows receiving rather than growing memory).
func (f *flusher) queueComplete(segNo uint64, data []byte, end pglogrepl.LSN) {
	f.mu.Lock()
	if f.partial != nil && f.partial.segNo <= segNo {
		f.partial = nil // superseded by the complete segment
	}
	f.mu.Unlock()
	f.completes <- flushJob{segNo: segNo, data: data, end: end}
}

// queuePartial replaces any pending partial with a newer one.
func (f *flusher) queuePartial(segNo uint64, data []byte, end pglogrepl.LSN) {
	f.mu.Lock()
	f.partial = &flushJob{segNo: segNo, data: data, end: end}
	f.mu.Unlock()
	select {
	case f.signal <- struct{}{}:
	default:
	}
}

// close asks the flusher to finish pending work and stop.
func (f *flusher) close() {
	f.mu.Lock()
	if !f.closed {
		f.closed = true
		close(f.completes)
	}
	f.mu.Unlock()
	select {
	case f.signal <- struct{}{}:
	default:
	}
}

func (f *flusher) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failErr
}

func (f *flusher) run(ctx context.Context) {
	defer close(f.flushed)
	var done pglogrepl.LSN
	for {
		// Complete segments first: a partial captured later must never be
		// written before the segment it follows.
		var job *flushJob
		select {
		case j, ok := <-f.completes:
			if ok {
				job = &j
			}
		default:
		}
		if job == nil {
			f.mu.Lock()
			job, f.partial = f.partial, nil
			closed := f.closed
			f.mu.Unlock()
			if job == nil {
				if closed {
					// Drain any complete segment queued before close.
					j, ok := <-f.completes
					if !ok {
						return
					}
					job = &j
				} else {
					select {
					case j, ok := <-f.completes:
						if ok {
							job = &j
						}
					case <-f.signal:
					case <-ctx.Done():
						return
					}
					if job == nil {
						continue
					}
				}
			}
		}
		if job.end <= done {
			continue
		}
		if err := f.write(ctx, job); err != nil {
			f.mu.Lock()
			f.failErr = err
			f.mu.Unlock()
			return
		}
		done = job.end
		select {
		case f.flushed <- done:
		case <-ctx.Done():
			return
		}
	}
}

func (f *flusher) write(ctx context.Context, j *flushJob) error {
	seg := wal.Segment{Timeline: f.tli, No: j.segNo}
	name := seg.Name(f.segSize)
	complete := uint64(len(j.data)) == f.segSize
	if !complete {
		if f.checkedPartial != j.segNo+1 {
			// The first partial of a segment this flusher writes may be
			// shorter than the one stored: a streamer that failed over to
			// a standby gets from it less of the segment than the old
			// primary sent. Replacing the longer copy with its prefix
			// would take WAL away from restore_command (PostgreSQL 18
			// PANICs at promotion when its last record vanishes).
			longer, err := f.storedPartialExtends(ctx, name+".partial", j.data)
			if err != nil {
				return err
			}
			if longer {
				f.log.Info("kept the stored partial segment: it holds more of the segment than this stream has yet", "segment", name, "received", len(j.data))
				return nil
			}
			f.checkedPartial = j.segNo + 1
		}
		if _, err := f.r.SaveWAL(ctx, f.tli, name+".partial", j.data, true); err != nil {
			return fmt.Errorf("store partial WAL segment %s: %w", name, err)
		}
		return nil
	}
	if _, err := f.r.SaveWAL(ctx, f.tli, name, j.data, false); err != nil {
		return fmt.Errorf("store WAL segment %s: %w", name, err)
	}
	if err := f.r.DeleteWAL(ctx, f.tli, name+".partial"); err != nil && !errors.Is(err, repo.ErrWALNotFound) {
		f.log.Warn("could not remove the partial of a completed segment", "segment", name, "err", err)
	}
	return nil
}

// storedPartialExtends reports whether the partial stored under name is
// longer than data and starts with it: the same WAL, more of it.
func (f *flusher) storedPartialExtends(ctx context.Context, name string, data []byte) (bool, error) {
	ok, err := f.r.WALExtends(ctx, f.tli, name, data)
	if err != nil {
		return false, fmt.Errorf("read the stored partial WAL segment %s: %w", name, err)
	}
	return ok, nil
}

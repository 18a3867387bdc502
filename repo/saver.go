package repo

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/index"
	"github.com/pgvault/pgvault/repo/pack"
)

// packsPerIndex is how many uploaded packs may wait before their blobs are
// written to an index object, and checkpointEvery how old an open pack or
// an unwritten index entry may get. Both mean that a killed backup leaves
// most of its data uploaded and findable, so the next run reuses it:
// PostgreSQL data compresses so well that a whole small database fits in
// one 16 MiB pack, which would otherwise only be written at the end.
const (
	packsPerIndex   = 8
	checkpointEvery = 5 * time.Second
	compactEvery    = 5 * time.Minute
)

// saver packs sealed blobs and uploads full packs in the background.
type ownBlob struct {
	id chunk.ID
	at time.Time
}

type saver struct {
	r *Repository

	mu          sync.Mutex
	queued      map[chunk.ID]struct{} // blobs handed to a pack this session, not yet indexed
	packers     map[pack.BlobType]*pack.Writer
	opened      map[pack.BlobType]time.Time // when each open pack got its first blob
	lastIndex   time.Time                   // when an index object was last written
	lastCompact time.Time                   // when our index objects were last compacted
	// own and ownOrder remember the blobs this process stored, for
	// concurrent writers, which reuse nothing else (see ReuseWindow).
	own      map[chunk.ID]time.Time
	ownOrder []ownBlob

	uploads chan *pack.Writer
	// packBufs holds buffers of uploaded packs for the next ones: a new
	// 18 MiB buffer costs its page faults as the pack fills (in a
	// scale-100 backup's profile, 0.15 s of memmove in pack.Writer.Add).
	packBufs chan []byte
	inFlight sync.WaitGroup // packs handed to uploads and not yet done
	workers  sync.WaitGroup

	errMu sync.Mutex
	err   error // first upload failure; every later Flush reports it

	sinceIndex atomic.Int32
	stored     atomic.Int64 // sealed bytes of new blobs
	packsUp    atomic.Int64
}

func newSaver(r *Repository) *saver {
	s := &saver{
		r:       r,
		queued:  map[chunk.ID]struct{}{},
		packers: map[pack.BlobType]*pack.Writer{},
		opened:  map[pack.BlobType]time.Time{},
		own:     map[chunk.ID]time.Time{},
		uploads: make(chan *pack.Writer, 1),
	}
	s.packBufs = make(chan []byte, r.opts.Uploaders+1)
	s.lastIndex = r.opts.Now()
	s.lastCompact = r.opts.Now()
	for range r.opts.Uploaders {
		s.workers.Add(1)
		go s.uploadLoop()
	}
	return s
}

// save stores plain as a blob of type t unless the repository (or this
// session) already has it. It returns the ID and whether it was new.
func (s *saver) save(ctx context.Context, t pack.BlobType, plain []byte, id chunk.ID) (bool, error) {
	if err := s.failed(); err != nil {
		return false, err
	}
	if !s.r.opts.ConcurrentWriter && s.r.idx.Has(id) {
		return false, nil
	}
	s.mu.Lock()
	if _, ok := s.queued[id]; ok {
		s.mu.Unlock()
		return false, nil
	}
	if s.r.opts.ConcurrentWriter && s.ownRecent(id) {
		s.mu.Unlock()
		return false, nil
	}
	s.queued[id] = struct{}{}
	if s.r.opts.ConcurrentWriter {
		now := s.r.opts.Now()
		s.own[id] = now
		s.ownOrder = append(s.ownOrder, ownBlob{id, now})
	}
	s.mu.Unlock()

	buf := s.r.sealBufs.Get().(*[]byte)
	sealed, err := s.r.sealBlob((*buf)[:0], t, id, plain)
	if err != nil {
		s.r.sealBufs.Put(buf)
		s.mu.Lock()
		delete(s.queued, id)
		s.mu.Unlock()
		return false, fmt.Errorf("seal blob %s: %w", id.Short(), err)
	}
	s.stored.Add(int64(len(sealed)))

	s.mu.Lock()
	w := s.packers[t]
	now := s.r.opts.Now()
	if w == nil {
		select {
		case buf := <-s.packBufs:
			w = pack.NewWriterOn(buf)
		default:
			w = pack.NewWriter(s.r.opts.PackSize + s.r.opts.PackSize/8)
		}
		s.packers[t] = w
		s.opened[t] = now
	}
	w.Add(t, id, sealed, len(plain))
	var full *pack.Writer
	if w.Size() >= s.r.opts.PackSize || now.Sub(s.opened[t]) >= checkpointEvery {
		full = w
		delete(s.packers, t)
	}
	s.mu.Unlock()
	*buf = sealed
	s.r.sealBufs.Put(buf)

	if full != nil {
		return true, s.enqueue(ctx, full)
	}
	return true, nil
}

// ownRecent reports whether this process stored id within the reuse
// window, forgetting older blobs. Called with s.mu held.
func (s *saver) ownRecent(id chunk.ID) bool {
	now := s.r.opts.Now()
	cut := 0
	for cut < len(s.ownOrder) && now.Sub(s.ownOrder[cut].at) >= s.r.opts.ReuseWindow {
		if s.own[s.ownOrder[cut].id] == s.ownOrder[cut].at {
			delete(s.own, s.ownOrder[cut].id)
		}
		cut++
	}
	if cut > 0 {
		s.ownOrder = append(s.ownOrder[:0:0], s.ownOrder[cut:]...)
	}
	at, ok := s.own[id]
	return ok && now.Sub(at) < s.r.opts.ReuseWindow
}

// enqueue hands a full pack to the uploads. A pack it cannot hand over
// (ctx ended while the uploads were busy) is lost, with blobs that earlier
// saves already reported as stored at the next flush: the saver fails
// then, so that no later flush reports them durable.
func (s *saver) enqueue(ctx context.Context, w *pack.Writer) error {
	s.inFlight.Add(1)
	select {
	case s.uploads <- w:
		return nil
	case <-ctx.Done():
		s.inFlight.Done()
		s.fail(fmt.Errorf("a pack of %d blobs was not uploaded: %w", w.Count(), ctx.Err()))
		return ctx.Err()
	}
}

func (s *saver) uploadLoop() {
	defer s.workers.Done()
	for w := range s.uploads {
		s.upload(w)
		s.inFlight.Done()
	}
}

func (s *saver) upload(w *pack.Writer) {
	if s.failed() != nil {
		return
	}
	ctx := s.r.bgCtx
	data, id, blobs := w.Finish(s.r.codec)
	h := backend.Handle{Type: backend.PackFile, Name: id.String()}
	if err := s.r.be.Save(ctx, h, data); err != nil {
		s.fail(fmt.Errorf("upload pack %s: %w", id.Short(), err))
		return
	}
	s.packsUp.Add(1)
	typ := pack.DataBlob
	if len(blobs) > 0 {
		typ = blobs[0].Type
	}
	s.r.idx.addPack(index.PackInfo{ID: id, Size: uint32(len(data)), Type: typ}, blobs)
	select { // only after a successful Save: a failed one may still be sending it
	case s.packBufs <- data:
	default:
	}
	s.mu.Lock()
	for _, b := range blobs {
		delete(s.queued, b.ID)
	}
	s.mu.Unlock()
	s.mu.Lock()
	due := s.sinceIndex.Add(1) >= packsPerIndex || s.r.opts.Now().Sub(s.lastIndex) >= checkpointEvery
	if due {
		s.sinceIndex.Store(0)
		s.lastIndex = s.r.opts.Now()
	}
	s.mu.Unlock()
	if due {
		if err := s.r.idx.flush(ctx); err != nil {
			s.fail(err)
			return
		}
		s.maybeCompact(ctx)
	}
}

func (s *saver) fail(err error) {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *saver) failed() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// flush closes every open pack, waits for all uploads and writes an index
// object for them: every blob whose save returned before flush was called
// is then durable and findable.
func (s *saver) flush(ctx context.Context) error {
	s.mu.Lock()
	var open []*pack.Writer
	for t, w := range s.packers {
		if w.Count() > 0 {
			open = append(open, w)
		}
		delete(s.packers, t)
	}
	s.mu.Unlock()
	for _, w := range open {
		if err := s.enqueue(ctx, w); err != nil {
			return err
		}
	}
	done := make(chan struct{})
	go func() { s.inFlight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := s.failed(); err != nil {
		return err
	}
	s.sinceIndex.Store(0)
	if err := s.r.idx.flush(ctx); err != nil {
		return err
	}
	s.maybeCompact(ctx)
	return nil
}

// maybeCompact folds our index objects together every compactEvery. A
// failure only leaves more objects behind, so it is logged, not fatal.
func (s *saver) maybeCompact(ctx context.Context) {
	s.mu.Lock()
	due := s.r.opts.Now().Sub(s.lastCompact) >= compactEvery
	if due {
		s.lastCompact = s.r.opts.Now()
	}
	s.mu.Unlock()
	if due {
		if err := s.r.idx.compactOwn(ctx); err != nil {
			s.r.log.Warn("index compaction failed", "err", err)
		}
	}
}

// close stops the upload workers; call after a final flush.
func (s *saver) close() {
	close(s.uploads)
	s.workers.Wait()
}

package overlay

import (
	"context"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/pgvault/pgvault/repo"
)

// Copy-on-read: snapshot content a read fetched (decrypted and
// decompressed, a whole chunk at a time) is also written into the
// overlay's upper file, so the next read of any block of that chunk is a
// local read instead of another load and decompression of the chunk.
// It is hydration driven by reads: PostgreSQL reads 8 KiB pages at
// random, and each of them would otherwise cost a 128 KiB decompression
// whenever the chunk has left the in-memory cache.
//
// Filled blocks are marked present and dirty like hydrated ones, so they
// reach the journal at the next persist and survive a remount. Their
// content equals the snapshot's, so the file does not count as modified
// (the kernel keeps its page cache).

// A file copy-on-read has filled at least half of (and that has at least
// completeMinBlocks blocks) is completed in the background, one file at a
// time: random readers such as PostgreSQL's index and heap lookups touch
// most chunks of a hot relation anyway, and once the file is whole it is
// local and opened by kernel passthrough, without a round trip through
// pgvault per page that misses the page cache.
const completeMinBlocks = 128

// copyOnReadReserve is the free space of the scratch file system below
// which copy-on-read stops, so that it never takes the room PostgreSQL's
// own writes need: at least 10% and at least 1 GiB stay free.
const (
	copyOnReadMinFree     = 1 << 30
	copyOnReadMinFreePart = 10 // percent
	copyOnReadCheckEvery  = 64 << 20
	copyOnReadParallel    = 4
)

// Windows. A read that misses the upper file and the blob cache loads one
// chunk: from an object store a round trip, and random readers (index
// and heap lookups) pay one for nearly every chunk of a hot relation.
// So each miss also starts, in the background, a fetch of the window of
// fillWindowChunks chunks around it, read with a request per pack run
// (the chunks of a file lie together in its packs) and stored in the
// upper file: the next reads nearby are local, and a relation read at
// random converges to local reads in a window's worth of requests
// instead of a chunk's. At most fillWindowParallel windows are fetched at
// once for misses, and as many for the file being completed; a window
// holds about 4 MiB of plaintext and at most 4 MiB of stored bytes
// (preloadRunMax), so all of them hold at most about 64 MiB. A miss while
// all are busy starts none.
const (
	fillWindowChunks   = 32
	fillWindowParallel = 4
)

// windowKey is a window of a file being fetched.
type windowKey struct {
	n *Node
	w int
}

// copyOnRead is the state of an overlay's copy-on-read.
type copyOnRead struct {
	limit     int64 // bytes; 0: off
	filled    atomic.Int64
	nextCheck atomic.Int64
	stopped   atomic.Bool

	mu        sync.Mutex     // orders starting a job against stop's wait
	closed    bool           // guarded by mu
	fills     errgroup.Group // copies of fetched chunks, copyOnReadParallel at once
	windows   errgroup.Group // window fetches around misses, fillWindowParallel at once
	fetching  map[windowKey]bool
	completes errgroup.Group // completions of half-filled files, one at a time
}

func newCopyOnRead(limit int64) *copyOnRead {
	c := &copyOnRead{limit: limit, fetching: map[windowKey]bool{}}
	c.fills.SetLimit(copyOnReadParallel)
	c.windows.SetLimit(fillWindowParallel)
	c.completes.SetLimit(1)
	return c
}

// start runs job in g in the background unless copy-on-read has stopped
// or every slot of g is busy; it never waits.
func (c *copyOnRead) start(g *errgroup.Group, job func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && g.TryGo(func() error {
		job()
		return nil
	})
}

// wait waits for the jobs under way: fills and window fetches first,
// since they may start a completion.
func (c *copyOnRead) wait() {
	c.fills.Wait()
	c.windows.Wait()
	c.completes.Wait()
}

func (c *copyOnRead) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// room reports whether n more bytes may be filled: a window is fetched
// only when all of it fits under the limit.
func (c *copyOnRead) room(n int64) bool {
	return c.on() && c.filled.Load()+n <= c.limit
}

// on reports whether more may be filled.
func (c *copyOnRead) on() bool {
	return c.limit > 0 && !c.stopped.Load() && c.filled.Load() < c.limit
}

// fetched is called after a read served snapshot chunks first..last of
// n's base file bf: it copies them into the upper file in the background.
// It never delays the read: when every filler is busy, it skips.
func (ov *Overlay) fetched(n *Node, bf *repo.File, first, last int) {
	c := ov.cor
	if !c.on() {
		return
	}
	c.start(&c.fills, func() {
		for i := first; i <= last && c.on(); i++ {
			ov.fillChunk(n, bf, i)
		}
	})
	for w := first / fillWindowChunks; w <= last/fillWindowChunks; w++ {
		ov.startWindow(n, bf, w)
	}
}

// startWindow fetches window w of n's base file bf into the upper file in
// the background, unless it is present already, being fetched, or every
// window slot is busy.
func (ov *Overlay) startWindow(n *Node, bf *repo.File, w int) {
	ci, cj := ov.windowMissing(n, bf, w*fillWindowChunks, min((w+1)*fillWindowChunks, len(bf.Chunks())))
	if ci >= cj {
		return
	}
	c := ov.cor
	key := windowKey{n, w}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.fetching[key] {
		return
	}
	if c.windows.TryGo(func() error {
		ov.fillChunks(context.Background(), n, bf, ci, cj)
		c.mu.Lock()
		delete(c.fetching, key)
		c.mu.Unlock()
		return nil
	}) {
		c.fetching[key] = true
	}
}

// windowMissing trims chunks [ci, cj) of n's base file bf to the span
// from the first to the last chunk whose blocks are not all present
// (ci >= cj: nothing to fetch, or the file is local).
func (ov *Overlay) windowMissing(n *Node, bf *repo.File, ci, cj int) (int, int) {
	f := n.file
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.local {
		return 0, 0
	}
	bs := ov.bs
	full := func(i int) bool {
		co, ce := bf.ChunkOffset(i), bf.ChunkOffset(i+1)
		if ce == bf.Size() {
			ce = ceilDiv(ce, bs) * bs // the file's last, partial block
		}
		for b := ceilDiv(co, bs); b < ce/bs; b++ {
			if !f.present.has(b) {
				return false
			}
		}
		return true
	}
	for ci < cj && full(ci) {
		ci++
	}
	for cj > ci && full(cj-1) {
		cj--
	}
	return ci, cj
}

// fillChunks reads chunks [ci, cj) of n's base file bf, and the chunk
// after them (so the block that straddles the boundary is filled too),
// without the blob cache, and stores the blocks they cover whole in the
// upper file. A failure is left to the reads that need the content.
func (ov *Overlay) fillChunks(ctx context.Context, n *Node, bf *repo.File, ci, cj int) {
	cj = min(cj+1, len(bf.Chunks()))
	bs := ov.bs
	co, ce := bf.ChunkOffset(ci), bf.ChunkOffset(cj)
	if !ov.cor.room(ce - co) {
		return
	}
	// Room for the file's last block past its end: the block image is
	// sliced from the buffer itself, with zeros after the content.
	data, err := bf.ReadChunks(ctx, ci, cj, make([]byte, 0, ce-co+bs))
	if err != nil {
		return
	}
	fb, lb := ceilDiv(co, bs), ce/bs
	if ce == bf.Size() && ce%bs != 0 {
		lb++
	}
	if fb >= lb {
		return
	}
	ov.storeImage(n, fb, data[fb*bs-co:lb*bs-co])
}

// fillChunk writes the blocks that chunk i of bf covers whole (and the
// file's last, partial block) into n's upper file, if the chunk is still
// in the blob cache.
func (ov *Overlay) fillChunk(n *Node, bf *repo.File, i int) {
	data, ok := bf.CachedChunk(i)
	if !ok {
		return
	}
	bs := ov.bs
	co := bf.ChunkOffset(i)
	ce := co + int64(len(data))
	fb, lb := ceilDiv(co, bs), ce/bs // blocks [fb, lb)
	if ce == bf.Size() && ce%bs != 0 {
		lb++
	}
	if fb >= lb {
		return
	}
	img := make([]byte, (lb-fb)*bs)
	copy(img, data[fb*bs-co:])
	ov.storeImage(n, fb, img)
}

// storeImage writes img, whole snapshot blocks from block fb on, into n's
// upper file where blocks are not present yet; then makes the file local
// when it is whole, or starts its completion when it is half filled.
func (ov *Overlay) storeImage(n *Node, fb int64, img []byte) {
	bs := ov.bs
	f := n.file
	f.mu.Lock()
	if f.local {
		f.mu.Unlock()
		return
	}
	copied, err := ov.storeBaseLocked(n, fb, img)
	nb := ceilDiv(f.size, bs)
	whole := err == nil && copied > 0 && f.present.allBelow(nb)
	complete := err == nil && copied > 0 && !whole && !f.completing && nb >= completeMinBlocks && f.present.count()*2 >= nb
	if complete {
		f.completing = true
	}
	upper := f.upper
	f.mu.Unlock()
	if err != nil {
		ov.log.Warn("copy-on-read stopped: the scratch folder refused a write", "file", n.basePath, "err", err)
		ov.cor.stopped.Store(true)
		return
	}
	if whole {
		ov.makeLocal(n, upper)
	}
	ov.countFilled(copied)
	if complete {
		ov.completeFile(n)
	}
}

// countFilled adds to the bytes copied and checks the scratch file
// system's free space every copyOnReadCheckEvery bytes.
func (ov *Overlay) countFilled(copied int64) {
	total := ov.cor.filled.Add(copied)
	if total >= ov.cor.nextCheck.Load() {
		ov.cor.nextCheck.Store(total + copyOnReadCheckEvery)
		ov.checkScratchSpace()
	}
}

// completeFile copies the rest of n's snapshot content into the overlay
// in the background, then makes the file local. When another file is
// being completed, it gives up (a later fill asks again).
func (ov *Overlay) completeFile(n *Node) {
	c := ov.cor
	f := n.file
	done := func() {
		f.mu.Lock()
		f.completing = false
		f.mu.Unlock()
	}
	started := c.start(&c.completes, func() {
		defer done()
		ov.fillWindows(n)
		// What the windows left (blocks written meanwhile and then
		// truncated, a window whose read failed): block runs in order.
		for c.on() && !c.isClosed() {
			copied, whole, err := ov.hydrateRun(context.Background(), n, hydrateStep)
			ov.countFilled(copied)
			if err != nil {
				ov.log.Warn("copy-on-read: completing a file failed", "file", n.basePath, "err", err)
				return
			}
			if whole {
				f.mu.RLock()
				upper := f.upper
				f.mu.RUnlock()
				if upper != nil {
					ov.makeLocal(n, upper)
				}
				return
			}
		}
	})
	if !started {
		done()
	}
}

// fillWindows fetches every window of n's base file that has blocks not
// present, fillWindowParallel at once, until copy-on-read stops.
func (ov *Overlay) fillWindows(n *Node) {
	c := ov.cor
	ctx := context.Background()
	bf, err := ov.baseFile(ctx, n)
	if err != nil {
		return
	}
	chunks := len(bf.Chunks())
	var g errgroup.Group
	g.SetLimit(fillWindowParallel)
	for ci := 0; ci < chunks && c.on() && !c.isClosed(); ci += fillWindowChunks {
		wi, wj := ov.windowMissing(n, bf, ci, min(ci+fillWindowChunks, chunks))
		if wi >= wj {
			continue
		}
		g.Go(func() error {
			ov.fillChunks(ctx, n, bf, wi, wj)
			return nil
		})
	}
	g.Wait()
}

// makeLocal persists a file that copy-on-read completed, which makes it
// local: served from the upper file, and by kernel passthrough from its
// next open on. The upper file is synced before the file lock is taken,
// so readers wait only for the journal record.
func (ov *Overlay) makeLocal(n *Node, upper *os.File) {
	// os.File.Sync, not a raw fdatasync: it fails cleanly if the file
	// was removed and its upper file closed meanwhile.
	if err := upper.Sync(); err != nil {
		return
	}
	f := n.file
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.local || f.upper != upper {
		return
	}
	if err := ov.persistLocked(context.Background(), n); err != nil {
		ov.log.Warn("copy-on-read: recording a completed file failed", "file", n.basePath, "err", err)
	}
}

// checkScratchSpace stops copy-on-read when the scratch file system runs
// low.
func (ov *Overlay) checkScratchSpace() {
	var st unix.Statfs_t
	if err := unix.Statfs(ov.upperDir, &st); err != nil {
		return
	}
	free := int64(st.Bavail) * st.Bsize
	total := int64(st.Blocks) * st.Bsize
	if free < copyOnReadMinFree || free < total/100*copyOnReadMinFreePart {
		if !ov.cor.stopped.Swap(true) {
			ov.log.Info("copy-on-read stopped: the scratch file system is low on space", "free_bytes", free, "copied_bytes", ov.cor.filled.Load())
		}
	}
}

// stopCopyOnRead stops copy-on-read and waits for fills under way.
func (ov *Overlay) stopCopyOnRead() {
	c := ov.cor
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.wait()
}

// storeBaseLocked writes blocks first, first+1, ... of n, whose snapshot
// content img holds (whole blocks), into the upper file and marks them
// present. Blocks present by now (written meanwhile) are skipped, and
// what lies past baseLimit (truncated meanwhile) is written as zeros. It
// returns the bytes written. The caller holds n.file.mu.
func (ov *Overlay) storeBaseLocked(n *Node, first int64, img []byte) (int64, error) {
	f := n.file
	bs := ov.bs
	if err := ov.openUpperLocked(n); err != nil {
		return 0, err
	}
	end := min(first+int64(len(img))/bs, ceilDiv(f.size, bs))
	var copied int64
	for b := first; b < end; {
		if f.present.has(b) {
			b++
			continue
		}
		e := b + 1
		for e < end && !f.present.has(e) {
			e++
		}
		run := img[(b-first)*bs : (e-first)*bs]
		if lim := f.baseLimit - b*bs; lim < int64(len(run)) {
			clear(run[max(lim, 0):])
		}
		if _, err := f.upper.WriteAt(run, b*bs); err != nil {
			return copied, err
		}
		f.present.setRange(b, e-b)
		f.dirty.setRange(b, e-b)
		copied += int64(len(run))
		b = e
	}
	return copied, nil
}

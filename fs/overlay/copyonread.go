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

// copyOnRead is the state of an overlay's copy-on-read.
type copyOnRead struct {
	limit     int64 // bytes; 0: off
	filled    atomic.Int64
	nextCheck atomic.Int64
	stopped   atomic.Bool

	mu        sync.Mutex     // orders starting a job against stop's wait
	closed    bool           // guarded by mu
	fills     errgroup.Group // copies of fetched chunks, copyOnReadParallel at once
	completes errgroup.Group // completions of half-filled files, one at a time
}

func newCopyOnRead(limit int64) *copyOnRead {
	c := &copyOnRead{limit: limit}
	c.fills.SetLimit(copyOnReadParallel)
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

// wait waits for the jobs under way: fills first, since a fill may start
// a completion.
func (c *copyOnRead) wait() {
	c.fills.Wait()
	c.completes.Wait()
}

func (c *copyOnRead) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
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

package fs

import (
	"context"
	"os"
	"sync"
	"sync/atomic"

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
	sem       chan struct{}
	filled    atomic.Int64
	nextCheck atomic.Int64
	stopped   atomic.Bool

	mu     sync.Mutex // orders wg.Add against stop's wg.Wait
	closed bool
	wg     sync.WaitGroup
}

func newCopyOnRead(limit int64) *copyOnRead {
	return &copyOnRead{limit: limit, sem: make(chan struct{}, copyOnReadParallel)}
}

// on reports whether more may be filled.
func (c *copyOnRead) on() bool {
	return c.limit > 0 && !c.stopped.Load() && c.filled.Load() < c.limit
}

// fetched is called after a read served snapshot chunks first..last of
// n's base file bf: it copies them into the upper file in the background.
// It never delays the read: when every filler is busy, it skips.
func (ov *Overlay) fetched(n *onode, bf *repo.File, first, last int) {
	c := ov.cor
	if !c.on() {
		return
	}
	select {
	case c.sem <- struct{}{}:
	default:
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.sem
		return
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		defer func() { <-c.sem }()
		for i := first; i <= last && c.on(); i++ {
			ov.fillChunk(n, bf, i)
		}
	}()
}

// fillChunk writes the blocks that chunk i of bf covers whole (and the
// file's last, partial block) into n's upper file, if the chunk is still
// in the blob cache.
func (ov *Overlay) fillChunk(n *onode, bf *repo.File, i int) {
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
	whole := err == nil && copied > 0 && f.present.allBelow(ceilDiv(f.size, bs))
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
	total := ov.cor.filled.Add(copied)
	if total >= ov.cor.nextCheck.Load() {
		ov.cor.nextCheck.Store(total + copyOnReadCheckEvery)
		ov.checkScratchSpace()
	}
}

// makeLocal persists a file that copy-on-read completed, which makes it
// local: served from the upper file, and by kernel passthrough from its
// next open on. The upper file is synced before the file lock is taken,
// so readers wait only for the journal record.
func (ov *Overlay) makeLocal(n *onode, upper *os.File) {
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
	c.wg.Wait()
}

// storeBaseLocked writes blocks first, first+1, ... of n, whose snapshot
// content img holds (whole blocks), into the upper file and marks them
// present. Blocks present by now (written meanwhile) are skipped, and
// what lies past baseLimit (truncated meanwhile) is written as zeros. It
// returns the bytes written. The caller holds n.file.mu.
func (ov *Overlay) storeBaseLocked(n *onode, first int64, img []byte) (int64, error) {
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

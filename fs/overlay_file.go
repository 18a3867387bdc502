package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgvault/pgvault/repo"
)

// fileState is the content of one regular file of the overlay. A file is
// either
//
//   - layered: block i (of the overlay's block size) comes from the upper
//     file if present has it, else from the snapshot for the bytes below
//     baseLimit and zeros above it (a truncation hides the snapshot's tail
//     for good, even if the file grows again); or
//   - local: the upper file holds all of it (files created in the
//     overlay, and snapshot files whose every block is present).
//
// Invariant: bytes of the upper file past size are zero, so growing a file
// shows zeros.
type fileState struct {
	mu        sync.RWMutex
	size      int64
	baseLimit int64
	local     bool
	present   bitmap
	dirty     bitmap // present blocks not yet in the journal
	metaDirty bool   // size changed since the last data record
	// completing is set while copy-on-read completes the file in the
	// background (copyonread.go).
	completing bool
	// modified is set once the file changes during this mount: until
	// then the kernel may keep its pages across opens (a new mount
	// starts with an empty page cache, so earlier sessions' changes
	// cannot be stale in it).
	modified bool

	upper *os.File

	baseMu sync.Mutex
	base   *repo.File
	clone  *walClone // a created file's content from the repository's WAL catalogue (guarded by baseMu)
}

// walClone names the WAL segment a created file is a copy of (cloneWAL):
// its content below baseLimit, where no block is present, is the
// segment's, read from the repository like snapshot content.
type walClone struct {
	tli  uint32
	name string // catalogue name
	size int64
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

func (f *fileState) currentSize() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.sizeLocked()
}

// sizeLocked is the file's size. A local file's upper file is the truth:
// kernel passthrough writes to it without telling us.
func (f *fileState) sizeLocked() int64 {
	if fi, ok := f.upperStatLocked(); ok {
		return fi.Size()
	}
	return f.size
}

// upperStatLocked stats a local file's upper file.
func (f *fileState) upperStatLocked() (os.FileInfo, bool) {
	if !f.local || f.upper == nil {
		return nil, false
	}
	fi, err := f.upper.Stat()
	return fi, err == nil
}

// truncateState applies a size change to the block map.
func (f *fileState) truncateState(size, bs int64) {
	if size < f.size && !f.local {
		f.baseLimit = min(f.baseLimit, size)
		nb := ceilDiv(size, bs)
		f.present.clearFrom(nb)
		f.dirty.clearFrom(nb)
	}
	f.size = size
}

// setUpperTime sets the upper file's mtime, which carries a whole-file's
// modification time across remounts.
func (f *fileState) setUpperTime(t time.Time) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.upper != nil && f.local {
		os.Chtimes(f.upper.Name(), t, t)
	}
}

func (f *fileState) syncUpperLocked() error {
	if f.upper == nil {
		return nil
	}
	return unix.Fdatasync(int(f.upper.Fd()))
}

func (f *fileState) closeUpper() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.upper != nil {
		f.upper.Close()
		f.upper = nil
	}
}

func (f *fileState) dropUpper(p string) {
	f.closeUpper()
	os.Remove(p)
}

// openUpperLocked opens (creating) the node's upper file.
func (ov *Overlay) openUpperLocked(n *onode) error {
	f := n.file
	if f.upper != nil {
		return nil
	}
	u, err := os.OpenFile(filepath.Join(ov.upperDir, upperName(n.ino)), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("overlay upper file: %w", err)
	}
	f.upper = u
	return nil
}

// baseFile opens the snapshot content of a file node once.
func (ov *Overlay) baseFile(ctx context.Context, n *onode) (*repo.File, error) {
	f := n.file
	f.baseMu.Lock()
	defer f.baseMu.Unlock()
	if f.base != nil {
		return f.base, nil
	}
	node := n.base
	if node == nil {
		// No path in these errors: building one takes Overlay.mu, which
		// may not be taken under baseMu.
		c := f.clone
		if c == nil {
			return nil, errors.New("a file created in the overlay has no snapshot content")
		}
		wf, err := ov.loadWALFile(ctx, c.tli, c.name)
		if err == nil && (wf.Partial || wf.Size != c.size) {
			err = fmt.Errorf("%w: it holds %d bytes, the copy %d", repo.ErrContentCorrupt, wf.Size, c.size)
		}
		if err != nil {
			ov.noteReadError(err)
			return nil, fmt.Errorf("copy of WAL %s: %w", c.name, err)
		}
		node = &repo.Node{Name: c.name, Type: repo.NodeFile, Size: wf.Size, Chunks: wf.Chunks}
	}
	bf, err := ov.r.OpenNode(ctx, node)
	if err != nil {
		ov.noteReadError(err)
		return nil, err
	}
	f.base = bf
	return bf, nil
}

// readBaseRange reads snapshot bytes [off, off+len(dst)) of n, and adds
// the chunks it read to fr (if not nil).
func (ov *Overlay) readBaseRange(ctx context.Context, n *onode, dst []byte, off int64, ra *readahead, fr *fetchedRange) error {
	if len(dst) == 0 {
		return nil
	}
	bf, err := ov.baseFile(ctx, n)
	if err != nil {
		return err
	}
	got, err := readBase(ctx, ov.pf, ra, bf, dst, off)
	ov.baseRead.Add(int64(got))
	if err != nil && !(errors.Is(err, io.EOF) && got == len(dst)) {
		if !errors.Is(err, context.Canceled) {
			ov.noteReadError(err)
			ov.log.Error("read from the repository failed", "file", n.basePath, "offset", off, "length", len(dst), "err", err)
		}
		return err
	}
	if fr != nil {
		fr.add(bf, off, off+int64(len(dst)))
	}
	return nil
}

// readBaseUncached reads snapshot bytes [off, off+len(dst)) of n without
// filling the blob cache (hydration reads everything once and would evict
// what PostgreSQL is using).
func (ov *Overlay) readBaseUncached(ctx context.Context, n *onode, dst []byte, off int64) error {
	bf, err := ov.baseFile(ctx, n)
	if err != nil {
		return err
	}
	chunks := bf.Chunks()
	var buf []byte
	for done := 0; done < len(dst); {
		pos := off + int64(done)
		i := bf.ChunkAt(pos)
		if i >= len(chunks) {
			return fmt.Errorf("read %s at %d: past the end: %w", n.basePath, pos, io.ErrUnexpectedEOF)
		}
		data, err := ov.r.ReadBlob(ctx, chunks[i].ID, buf)
		if err == nil && len(data) != int(chunks[i].Size) {
			err = fmt.Errorf("chunk %s is %d bytes, list says %d: %w", chunks[i].ID.Short(), len(data), chunks[i].Size, repo.ErrContentCorrupt)
		}
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				ov.noteReadError(err)
				ov.log.Error("read from the repository failed", "file", n.basePath, "offset", pos, "err", err)
			}
			return fmt.Errorf("read %s at %d: %w", n.basePath, pos, err)
		}
		buf = data
		done += copy(dst[done:], data[pos-bf.ChunkOffset(i):])
	}
	ov.baseRead.Add(int64(len(dst)))
	return nil
}

// preadFull reads len(dst) bytes at off of an upper file; what lies past
// its end reads as zeros.
func preadFull(u *os.File, dst []byte, off int64) error {
	got, err := u.ReadAt(dst, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read overlay upper file: %w", err)
	}
	clear(dst[got:])
	return nil
}

// read reads up to len(dst) bytes at off; it returns 0 at or past the end.
// Snapshot chunks it fetched are then copied into the overlay
// (copy-on-read).
func (ov *Overlay) read(ctx context.Context, n *onode, dst []byte, off int64, ra *readahead) (int, error) {
	var fr fetchedRange
	got, err := ov.readLocked(ctx, n, dst, off, ra, &fr)
	// No copy-on-read of a WAL copy (cloneWAL): recovery reads each of
	// its pages once, and copying them up would put back the scratch
	// writes the reference saved.
	if err == nil && fr.bf != nil && n.base != nil {
		ov.fetched(n, fr.bf, fr.first, fr.last)
	}
	return got, err
}

// fetchedRange is the span of snapshot chunks a read served.
type fetchedRange struct {
	bf          *repo.File
	first, last int
}

func (fr *fetchedRange) add(bf *repo.File, off, end int64) {
	if end <= off {
		return
	}
	first, last := bf.ChunkAt(off), bf.ChunkAt(end-1)
	if fr.bf == nil {
		fr.bf, fr.first, fr.last = bf, first, last
		return
	}
	fr.first, fr.last = min(fr.first, first), max(fr.last, last)
}

func (ov *Overlay) readLocked(ctx context.Context, n *onode, dst []byte, off int64, ra *readahead, fr *fetchedRange) (int, error) {
	f := n.file
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.local {
		if f.upper == nil || len(dst) == 0 {
			return 0, nil
		}
		got, err := f.upper.ReadAt(dst, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("read overlay upper file: %w", err)
		}
		ov.upperRead.Add(int64(got))
		return got, nil
	}
	if off >= f.size || len(dst) == 0 {
		return 0, nil
	}
	end := min(off+int64(len(dst)), f.size)
	dst = dst[:end-off]
	bs := ov.bs
	for pos := off; pos < end; {
		b := pos / bs
		present := f.present.has(b)
		runEnd := min((b+1)*bs, end)
		for runEnd < end && f.present.has(runEnd/bs) == present {
			runEnd = min(runEnd+bs, end)
		}
		seg := dst[pos-off : runEnd-off]
		if present {
			if err := preadFull(f.upper, seg, pos); err != nil {
				return 0, err
			}
			ov.upperRead.Add(int64(len(seg)))
		} else {
			baseEnd := max(pos, min(runEnd, f.baseLimit))
			if err := ov.readBaseRange(ctx, n, seg[:baseEnd-pos], pos, ra, fr); err != nil {
				return 0, err
			}
			clear(seg[baseEnd-pos:])
		}
		pos = runEnd
	}
	return len(dst), nil
}

// blockImageLocked builds block b as it reads now, for a block that is
// not present: snapshot bytes below baseLimit, zeros above.
func (ov *Overlay) blockImageLocked(ctx context.Context, n *onode, b int64) ([]byte, error) {
	f := n.file
	img := make([]byte, ov.bs)
	start := b * ov.bs
	if start < f.baseLimit {
		upto := min(start+ov.bs, f.baseLimit)
		if err := ov.readBaseRange(ctx, n, img[:upto-start], start, nil, nil); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// write writes data at off. Blocks the write covers only partly are first
// filled with what they hold now (from the snapshot if not present), so
// that a present block is always whole in the upper file.
func (ov *Overlay) write(ctx context.Context, n *onode, data []byte, off int64) (int, error) {
	if len(data) == 0 {
		return 0, nil
	}
	if off < 0 {
		return 0, syscall.EINVAL
	}
	f := n.file
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := ov.openUpperLocked(n); err != nil {
		return 0, err
	}
	end := off + int64(len(data))
	f.modified = true
	if !f.local {
		bs := ov.bs
		fb, lb := off/bs, (end-1)/bs
		for _, b := range []int64{fb, lb} {
			if f.present.has(b) || (off <= b*bs && end >= (b+1)*bs) {
				continue
			}
			img, err := ov.blockImageLocked(ctx, n, b)
			if err != nil {
				return 0, err
			}
			if _, err := f.upper.WriteAt(img, b*bs); err != nil {
				return 0, fmt.Errorf("write overlay upper file: %w", err)
			}
			f.present.set(b)
			f.dirty.set(b)
			if lb == fb {
				break
			}
		}
		if _, err := f.upper.WriteAt(data, off); err != nil {
			return 0, fmt.Errorf("write overlay upper file: %w", err)
		}
		f.present.setRange(fb, lb-fb+1)
		f.dirty.setRange(fb, lb-fb+1)
	} else if _, err := f.upper.WriteAt(data, off); err != nil {
		return 0, fmt.Errorf("write overlay upper file: %w", err)
	}
	if end > f.size {
		f.size = end
		f.metaDirty = true
	}
	n.mtime.Store(ov.now().UnixNano())
	ov.written.Add(int64(len(data)))
	return len(data), nil
}

// truncate sets a file's size.
func (ov *Overlay) truncate(ctx context.Context, n *onode, size int64) error {
	f := n.file
	f.mu.Lock()
	defer f.mu.Unlock()
	if size == f.sizeLocked() {
		return nil
	}
	f.modified = true
	if f.local {
		f.size = f.sizeLocked()
	}
	// The record first: if the journal cannot take it, nothing changed.
	ov.mu.Lock()
	err := ov.commitLocked(ctx, &record{Kind: recSetattr, Node: n.ref(), Valid: attrSize | attrMTime, Size: size, MTime: ov.now().UnixNano()})
	ov.mu.Unlock()
	if err != nil {
		// The in-memory state may be half-applied only if apply failed,
		// which for a size change it cannot.
		return err
	}
	if f.upper != nil {
		if fi, err := f.upper.Stat(); err == nil && fi.Size() > size {
			if err := f.upper.Truncate(size); err != nil {
				return fmt.Errorf("truncate overlay upper file: %w", err)
			}
		} else if err == nil && f.local && fi.Size() < size {
			if err := f.upper.Truncate(size); err != nil {
				return fmt.Errorf("extend overlay upper file: %w", err)
			}
		}
	} else if f.local && size > 0 {
		if err := ov.openUpperLocked(n); err != nil {
			return err
		}
		if err := f.upper.Truncate(size); err != nil {
			return fmt.Errorf("extend overlay upper file: %w", err)
		}
	}
	return nil
}

// Fallocate modes the overlay supports (fallocate(2)).
const (
	fallocKeepSize  = unix.FALLOC_FL_KEEP_SIZE
	fallocPunchHole = unix.FALLOC_FL_PUNCH_HOLE
	fallocZeroRange = unix.FALLOC_FL_ZERO_RANGE
)

// allocate implements fallocate: plain allocation (growing the file unless
// FALLOC_FL_KEEP_SIZE), and punching holes or zeroing ranges, which write
// zeros through the overlay.
func (ov *Overlay) allocate(ctx context.Context, n *onode, off, length int64, mode uint32) error {
	if off < 0 || length <= 0 {
		return syscall.EINVAL
	}
	end := off + length
	switch mode {
	case 0, fallocKeepSize:
		f := n.file
		f.mu.RLock()
		grow := end > f.sizeLocked() && mode == 0
		local := f.local
		f.mu.RUnlock()
		if local {
			f.mu.Lock()
			err := ov.openUpperLocked(n)
			if err == nil {
				// Reserve the space where the data will go, so that a full
				// scratch disk shows up here and not at a later write.
				err = unix.Fallocate(int(f.upper.Fd()), fallocKeepSize, off, length)
				if errors.Is(err, unix.EOPNOTSUPP) {
					err = nil
				}
			}
			f.mu.Unlock()
			if err != nil {
				return err
			}
		}
		if grow {
			return ov.truncate(ctx, n, end)
		}
		return nil
	case fallocPunchHole | fallocKeepSize, fallocZeroRange, fallocZeroRange | fallocKeepSize:
		size := n.file.currentSize()
		if mode&fallocKeepSize != 0 && end > size {
			end = size
		}
		zeros := make([]byte, min(end-off, 1<<20))
		for pos := off; pos < end; {
			k := min(int64(len(zeros)), end-pos)
			if _, err := ov.write(ctx, n, zeros[:k], pos); err != nil {
				return err
			}
			pos += k
		}
		return nil
	}
	return syscall.EOPNOTSUPP
}

// persist makes a file's changes durable: its upper file synced first,
// then a data record with the blocks that became present and its size,
// so that the journal never names a block whose bytes could be lost. A
// file whose every block is present becomes local. The journal itself is
// synced by the caller (syncJournal).
func (ov *Overlay) persist(ctx context.Context, n *onode) error {
	f := n.file
	f.mu.Lock()
	defer f.mu.Unlock()
	return ov.persistLocked(ctx, n)
}

func (ov *Overlay) persistLocked(ctx context.Context, n *onode) error {
	f := n.file
	if f.local {
		return f.syncUpperLocked()
	}
	nb := ceilDiv(f.size, ov.bs)
	// Whole: every block present (an empty file counts only if it was
	// emptied, not if the snapshot's file is empty anyway).
	whole := f.present.allBelow(nb) && (nb > 0 || baseSize(n) > 0)
	if !f.metaDirty && f.dirty.empty() && !whole {
		return nil
	}
	if whole {
		if err := ov.openUpperLocked(n); err != nil {
			return err
		}
		if err := f.upper.Truncate(f.size); err != nil {
			return fmt.Errorf("overlay upper file: %w", err)
		}
	}
	if err := f.syncUpperLocked(); err != nil {
		return fmt.Errorf("sync overlay upper file: %w", err)
	}
	r := &record{Kind: recData, Node: n.ref(), Size: f.size, BaseLimit: f.baseLimit, MTime: n.mtime.Load()}
	if whole {
		r.Flags = dataLocal
		r.BaseLimit = 0
	} else {
		r.Ranges = f.dirty.and(f.present).ranges()
	}
	ov.mu.Lock()
	err := ov.commitLocked(ctx, r)
	ov.mu.Unlock()
	if err != nil {
		return err
	}
	f.dirty, f.metaDirty = nil, false
	if whole {
		os.Chtimes(f.upper.Name(), time.Unix(0, r.MTime), time.Unix(0, r.MTime))
	}
	return nil
}

// fsync makes a file durable, and with it every namespace change so far.
func (ov *Overlay) fsync(ctx context.Context, n *onode) error {
	if n.kind == kindFile {
		if err := ov.persist(ctx, n); err != nil {
			return err
		}
	}
	return ov.syncJournal()
}

// hydrateRun copies the next run of blocks of n that are not present (at
// most limit bytes) from the snapshot into the upper file. It returns the
// bytes copied and whether the file has nothing left to copy.
func (ov *Overlay) hydrateRun(ctx context.Context, n *onode, limit int64) (int64, bool, error) {
	f := n.file
	bs := ov.bs
	f.mu.RLock()
	if f.local {
		f.mu.RUnlock()
		return 0, true, nil
	}
	nb := ceilDiv(f.size, bs)
	first := f.present.firstClear(nb)
	if first < 0 {
		f.mu.RUnlock()
		return 0, true, nil
	}
	last := first
	for last+1 < nb && !f.present.has(last+1) && (last+2-first)*bs <= max(limit, bs) {
		last++
	}
	start := first * bs
	upto := min((last+1)*bs, f.baseLimit)
	f.mu.RUnlock()

	buf := make([]byte, (last+1-first)*bs)
	if upto > start {
		if err := ov.readBaseUncached(ctx, n, buf[:upto-start], start); err != nil {
			return 0, false, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.local {
		return 0, true, nil
	}
	copied, err := ov.storeBaseLocked(n, first, buf)
	if err != nil {
		return copied, false, fmt.Errorf("write overlay upper file: %w", err)
	}
	return copied, f.present.allBelow(ceilDiv(f.size, bs)), nil
}

// baseSize is the size of the content a file's blocks fall back to: its
// snapshot file's, or the WAL segment's it is a copy of (0 if none).
func baseSize(n *onode) int64 {
	if n.base != nil {
		return n.base.Size
	}
	f := n.file
	f.baseMu.Lock()
	defer f.baseMu.Unlock()
	if f.clone != nil {
		return f.clone.size
	}
	return 0
}

// cloneWAL makes the empty file n, created in the overlay, a copy of a
// complete WAL segment of the repository without copying it: n's content
// becomes a reference to the segment, read like snapshot content, and a
// write copies blocks up as in any other file. restore_command's cp from
// the WAL view into pg_wal (RECOVERYXLOG) ends here: PostgreSQL then syncs
// and renames the file (durable_rename), which for a 16 MiB copy in the
// upper file was a 16 MiB write and fsync on the scratch disk per
// segment; as a reference it is one journal record. It reports false,
// and changes nothing, unless n is a created, empty file held whole in
// the overlay that no kernel passthrough handle has open (such a handle
// writes to the upper file without pgvault seeing it).
func (ov *Overlay) cloneWAL(ctx context.Context, n *onode, c walClone) (bool, error) {
	f := n.file
	f.mu.Lock()
	defer f.mu.Unlock()
	if n.base != nil || !f.local || f.sizeLocked() != 0 {
		return false, nil
	}
	ov.mu.Lock()
	defer ov.mu.Unlock()
	if n.ptOpens > 0 || n.removed || ov.noClones {
		return false, nil
	}
	r := &record{Kind: recClone, Node: n.ref(), Timeline: c.tli, Name: c.name, Size: c.size, MTime: ov.now().UnixNano()}
	if err := ov.commitLocked(ctx, r); err != nil {
		return false, err
	}
	return true, nil
}

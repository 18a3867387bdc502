package overlay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Write writes data into file n at off (EINVAL for anything but a file),
// growing it if needed. It is durable once Fsync returns: before that, a
// crash leaves each block written either old or new. Blocks the write
// covers only partly are first filled with what they hold now (from the
// snapshot if not present), so that a present block is always whole in
// the upper file.
func (ov *Overlay) Write(ctx context.Context, n *Node, data []byte, off int64) (int, error) {
	if n.kind != KindFile {
		return 0, syscall.EINVAL
	}
	return ov.write(ctx, n, data, off)
}

// write is Write of a file.
func (ov *Overlay) write(ctx context.Context, n *Node, data []byte, off int64) (int, error) {
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
func (ov *Overlay) truncate(ctx context.Context, n *Node, size int64) error {
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

// Allocate implements fallocate(2) on file n (ENODEV for anything else):
// plain allocation (growing the file unless FALLOC_FL_KEEP_SIZE), and
// punching holes or zeroing ranges, which write zeros through the
// overlay. Other modes are EOPNOTSUPP.
func (ov *Overlay) Allocate(ctx context.Context, n *Node, off, length int64, mode uint32) error {
	if n.kind != KindFile {
		return syscall.ENODEV
	}
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
func (ov *Overlay) persist(ctx context.Context, n *Node) error {
	f := n.file
	f.mu.Lock()
	defer f.mu.Unlock()
	return ov.persistLocked(ctx, n)
}

func (ov *Overlay) persistLocked(ctx context.Context, n *Node) error {
	f := n.file
	if f.local {
		return ov.syncUpperLocked(f)
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
	if err := ov.syncUpperLocked(f); err != nil {
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

// Fsync makes node n durable (for a file: its content, size and block
// map), and with it every namespace change so far: after it returns, a
// kill -9 and a remount with the same scratch folder give it back.
func (ov *Overlay) Fsync(ctx context.Context, n *Node) error {
	if n.kind == KindFile {
		if err := ov.persist(ctx, n); err != nil {
			return err
		}
	}
	return ov.syncJournal()
}

// baseSize is the size of the content a file's blocks fall back to: its
// snapshot file's, or the WAL segment's it is a copy of (0 if none).
func baseSize(n *Node) int64 {
	if n.base != nil {
		return n.base.Size
	}
	f := n.file
	f.baseMu.Lock()
	defer f.baseMu.Unlock()
	if f.clone != nil {
		return f.clone.Size
	}
	return 0
}

// CloneWAL makes the empty file n, created in the overlay, a copy of a
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
func (ov *Overlay) CloneWAL(ctx context.Context, n *Node, c WALRef) (bool, error) {
	if n.kind != KindFile {
		return false, nil
	}
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
	r := &record{Kind: recClone, Node: n.ref(), Timeline: c.Timeline, Name: c.Name, Size: c.Size, MTime: ov.now().UnixNano()}
	if err := ov.commitLocked(ctx, r); err != nil {
		return false, err
	}
	return true, nil
}

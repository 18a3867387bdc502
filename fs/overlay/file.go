package overlay

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

	"github.com/pgvault/pgvault/fs/chunkread"
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
	clone  *WALRef // a created file's content from the repository's WAL catalogue (guarded by baseMu)
}

// WALRef names a complete WAL segment of the repository's catalogue that
// a file created in the overlay is a copy of (CloneWAL): its content
// below baseLimit, where no block is present, is the segment's, read from
// the repository like snapshot content.
type WALRef struct {
	Timeline uint32
	Name     string // catalogue name
	Size     int64
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

// syncUpperLocked makes f's upper file durable, unless the overlay is
// ephemeral.
func (ov *Overlay) syncUpperLocked(f *fileState) error {
	if f.upper == nil || ov.ephemeral {
		return nil
	}
	ov.flushes.Add(1)
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
func (ov *Overlay) openUpperLocked(n *Node) error {
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
func (ov *Overlay) baseFile(ctx context.Context, n *Node) (*repo.File, error) {
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
		wf, err := ov.LoadWALFile(ctx, c.Timeline, c.Name)
		if err == nil && (wf.Partial || wf.Size != c.Size) {
			err = fmt.Errorf("%w: it holds %d bytes, the copy %d", repo.ErrContentCorrupt, wf.Size, c.Size)
		}
		if err != nil {
			ov.noteReadError(err)
			return nil, fmt.Errorf("copy of WAL %s: %w", c.Name, err)
		}
		node = &repo.Node{Name: c.Name, Type: repo.NodeFile, Size: wf.Size, Chunks: wf.Chunks}
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
func (ov *Overlay) readBaseRange(ctx context.Context, n *Node, dst []byte, off int64, ra *chunkread.Readahead, fr *fetchedRange) error {
	if len(dst) == 0 {
		return nil
	}
	bf, err := ov.baseFile(ctx, n)
	if err != nil {
		return err
	}
	got, err := chunkread.Read(ctx, ov.pf, ra, bf, dst, off)
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
func (ov *Overlay) readBaseUncached(ctx context.Context, n *Node, dst []byte, off int64) error {
	if len(dst) == 0 {
		return nil
	}
	bf, err := ov.baseFile(ctx, n)
	if err != nil {
		return err
	}
	first, last := bf.ChunkAt(off), bf.ChunkAt(off+int64(len(dst))-1)
	if last >= len(bf.Chunks()) {
		return fmt.Errorf("read %s at %d: past the end: %w", n.basePath, off, io.ErrUnexpectedEOF)
	}
	data, err := bf.ReadChunks(ctx, first, last+1, nil)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			ov.noteReadError(err)
			ov.log.Error("read from the repository failed", "file", n.basePath, "offset", off, "err", err)
		}
		return fmt.Errorf("read %s at %d: %w", n.basePath, off, err)
	}
	copy(dst, data[off-bf.ChunkOffset(first):])
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

// Read reads up to len(dst) bytes of file n at off; it returns 0 at or
// past the end (not io.EOF). ra is the open file's access pattern, for
// prefetching, or nil. Blocks present in the overlay come from the upper
// file, the rest from the snapshot through the blob cache; a repository
// read failure is an error (and a log line), never wrong or zero bytes.
// Reads and writes of one file are ordered by its lock; reads of one
// file run concurrently.
func (ov *Overlay) Read(ctx context.Context, n *Node, dst []byte, off int64, ra *chunkread.Readahead) (int, error) {
	switch n.kind {
	case KindFile:
		return ov.read(ctx, n, dst, off, ra)
	case KindDir:
		return 0, syscall.EISDIR
	}
	return 0, syscall.EINVAL
}

// read is Read of a file. Snapshot chunks it fetched are then copied into
// the overlay (copy-on-read).
func (ov *Overlay) read(ctx context.Context, n *Node, dst []byte, off int64, ra *chunkread.Readahead) (int, error) {
	var fr fetchedRange
	got, err := ov.readLocked(ctx, n, dst, off, ra, &fr)
	// No copy-on-read of a WAL copy (CloneWAL): recovery reads each of
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

func (ov *Overlay) readLocked(ctx context.Context, n *Node, dst []byte, off int64, ra *chunkread.Readahead, fr *fetchedRange) (int, error) {
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
func (ov *Overlay) blockImageLocked(ctx context.Context, n *Node, b int64) ([]byte, error) {
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

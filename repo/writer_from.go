package repo

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Range is a byte range of a file: Len bytes from Off.
type Range struct{ Off, Len int64 }

// rangeCursor answers, for chunks visited in increasing offset order,
// whether any of a file's changed ranges touches a chunk: linear in chunks
// plus ranges, where asking every range for every chunk is quadratic (a
// replay that changed half the pages of a 1 GiB relation lists ~60k).
type rangeCursor struct {
	ranges []Range // sorted by Off
	next   int     // ranges before it end at or before the last chunk asked
}

func newRangeCursor(ranges []Range) *rangeCursor {
	if !slices.IsSortedFunc(ranges, func(a, b Range) int { return cmp.Compare(a.Off, b.Off) }) {
		ranges = slices.SortedFunc(slices.Values(ranges), func(a, b Range) int { return cmp.Compare(a.Off, b.Off) })
	}
	return &rangeCursor{ranges: ranges}
}

// touches reports whether a range touches [off, end); off must not be
// below the previous call's.
func (c *rangeCursor) touches(off, end int64) bool {
	for c.next < len(c.ranges) && c.ranges[c.next].Off+c.ranges[c.next].Len <= off {
		c.next++
	}
	// Ranges are sorted by start: if the first one still ending after off
	// starts at or after end, so do all those after it.
	for i := c.next; i < len(c.ranges) && c.ranges[i].Off < end; i++ {
		if c.ranges[i].Off+c.ranges[i].Len > off {
			return true
		}
	}
	return false
}

// AddNode records an entry of an earlier snapshot of this repository as
// it is: a file keeps its chunks (nothing is read or stored), a symbolic
// link its target. Directories are added with AddDir.
func (w *SnapshotWriter) AddNode(p string, n *Node) error {
	if err := w.failed(); err != nil {
		return err
	}
	c := *n
	c.Subtree = nil
	switch n.Type {
	case NodeFile:
		if n.Chunks != nil {
			c.Chunks = append([]ChunkRef(nil), n.Chunks...)
		}
		if err := w.addLeaf(p, &c); err != nil {
			return err
		}
		w.nFiles.Add(1)
		w.nBytes.Add(n.Size)
	case NodeSymlink:
		if err := w.addLeaf(p, &c); err != nil {
			return err
		}
		w.nSymlinks.Add(1)
	default:
		return fmt.Errorf("snapshot path %q: AddNode takes files and symbolic links", p)
	}
	return nil
}

// AddFileFrom records a file that differs from an earlier version, whose
// chunks are base, only in the byte ranges changed (and in its size,
// size): every chunk of base that no range touches is reused without
// being read, and the rest is read from r. It is for files split with
// SplitFixed (relation files): their chunks sit at multiples of the
// repository's chunk size, so an unchanged range keeps its chunk. A base
// that is not split that way is read from r whole. It returns the bytes
// read from r. The caller must list every byte that differs: a range left
// out keeps the old bytes.
func (w *SnapshotWriter) AddFileFrom(p string, meta NodeMeta, base []ChunkRef, changed []Range, size int64, r io.ReaderAt) (int64, error) {
	if err := w.failed(); err != nil {
		return 0, err
	}
	n := &Node{Type: NodeFile}
	applyMeta(n, meta)
	if err := w.addLeaf(p, n); err != nil {
		return 0, err
	}
	w.nFiles.Add(1)
	cs := int64(w.r.cfg.ChunkSize)
	reuse := fixedChunks(base, cs)
	f := &fileJob{node: n}
	touched := newRangeCursor(changed)
	var read int64
	for off := int64(0); off < size; off += cs {
		end := min(off+cs, size)
		w.nBytes.Add(end - off)
		if i := off / cs; reuse && i < int64(len(base)) && int64(base[i].Size) == end-off && !touched.touches(off, end) {
			// Already in the repository: no work for the uploaders.
			f.jobs = append(f.jobs, &chunkJob{ref: base[i], file: f})
			w.nChunks.Add(1)
			continue
		}
		buf := w.bufs.Get().(*[]byte)
		data := (*buf)[:end-off]
		if k, err := r.ReadAt(data, off); k < len(data) {
			w.bufs.Put(buf)
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			w.queueFile(f)
			err = fmt.Errorf("read %s at %d: %w", p, off, err)
			w.fail(err)
			return read, err
		}
		read += int64(len(data))
		j := &chunkJob{buf: buf, data: data, file: f}
		f.jobs = append(f.jobs, j)
		f.wg.Add(1)
		select {
		case w.jobs <- j:
		case <-w.ctx.Done():
			f.wg.Done()
			w.queueFile(f)
			if err := w.failed(); err != nil {
				return read, err
			}
			return read, w.ctx.Err()
		}
	}
	w.queueFile(f)
	return read, w.failed()
}

// fixedChunks reports whether chunks sit at multiples of cs: every chunk
// but the last is cs bytes long.
func fixedChunks(chunks []ChunkRef, cs int64) bool {
	for i, c := range chunks {
		if i < len(chunks)-1 && int64(c.Size) != cs || int64(c.Size) > cs {
			return false
		}
	}
	return true
}

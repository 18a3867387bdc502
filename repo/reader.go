package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/pgvault/pgvault/chunk"
)

// LoadTree reads and decodes a tree blob (cached like every blob).
func (r *Repository) LoadTree(ctx context.Context, id chunk.ID) (*Tree, error) {
	data, err := r.LoadBlob(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load tree %s: %w", id.Short(), err)
	}
	t, err := DecodeTree(data)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", id.Short(), err)
	}
	return t, nil
}

// Lookup finds the node at path p in snapshot s. The root is returned as a
// directory node named "".
func (r *Repository) Lookup(ctx context.Context, s *Snapshot, p string) (*Node, error) {
	parts, err := SplitPath(p)
	if err != nil {
		return nil, err
	}
	root := s.RootNode
	n := &root
	for i, name := range parts {
		if n.Type != NodeDir {
			return nil, fmt.Errorf("%s: %q is not a directory: %w", p, joinParts(parts[:i]), ErrFileNotFound)
		}
		t, err := r.LoadTree(ctx, *n.Subtree)
		if err != nil {
			return nil, err
		}
		child, ok := t.Find(name)
		if !ok {
			return nil, fmt.Errorf("%s in snapshot %s: %w", p, s.ShortID(), ErrFileNotFound)
		}
		n = child
	}
	return n, nil
}

// Walk calls fn for every node of the tree rooted at root, parents before
// children, siblings in name order, with slash-separated paths relative to
// the root. Returning ErrSkipDir from fn for a directory skips its entries.
func (r *Repository) Walk(ctx context.Context, root chunk.ID, fn func(p string, n *Node) error) error {
	return r.walk(ctx, root, "", fn)
}

// ErrSkipDir tells Walk not to descend into a directory.
var ErrSkipDir = errors.New("skip this directory")

func (r *Repository) walk(ctx context.Context, id chunk.ID, prefix string, fn func(string, *Node) error) error {
	t, err := r.LoadTree(ctx, id)
	if err != nil {
		return err
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		p := n.Name
		if prefix != "" {
			p = prefix + "/" + n.Name
		}
		err := fn(p, n)
		if errors.Is(err, ErrSkipDir) {
			continue
		}
		if err != nil {
			return err
		}
		if n.Type == NodeDir {
			if err := r.walk(ctx, *n.Subtree, p, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// ChunkList returns a file node's chunks, loading its content list if the
// node does not hold them itself.
func (r *Repository) ChunkList(ctx context.Context, n *Node) ([]ChunkRef, error) {
	if n.Type != NodeFile {
		return nil, fmt.Errorf("%s is not a regular file", n.Name)
	}
	if n.Content == nil {
		return n.Chunks, nil
	}
	data, err := r.LoadBlob(ctx, *n.Content)
	if err != nil {
		return nil, fmt.Errorf("%s: load content list: %w", n.Name, err)
	}
	refs, err := DecodeContent(data)
	if err != nil {
		return nil, fmt.Errorf("%s: content list %s: %w", n.Name, n.Content.Short(), err)
	}
	return refs, nil
}

// File gives random access to the content of one stored file.
type File struct {
	r       *Repository
	node    Node
	chunks  []ChunkRef
	offsets []int64 // offsets[i] is where chunk i starts; last is the size
}

// OpenFile opens the file at path p of snapshot s.
func (r *Repository) OpenFile(ctx context.Context, s *Snapshot, p string) (*File, error) {
	n, err := r.Lookup(ctx, s, p)
	if err != nil {
		return nil, err
	}
	return r.OpenNode(ctx, n)
}

// OpenNode opens a file node found by Lookup or Walk.
func (r *Repository) OpenNode(ctx context.Context, n *Node) (*File, error) {
	refs, err := r.ChunkList(ctx, n)
	if err != nil {
		return nil, err
	}
	offs := make([]int64, len(refs)+1)
	for i, c := range refs {
		offs[i+1] = offs[i] + int64(c.Size)
	}
	if offs[len(refs)] != n.Size {
		return nil, fmt.Errorf("%s: chunks hold %d bytes but the file is %d: %w", n.Name, offs[len(refs)], n.Size, ErrContentCorrupt)
	}
	return &File{r: r, node: *n, chunks: refs, offsets: offs}, nil
}

// Node returns the file's tree entry.
func (f *File) Node() *Node { return &f.node }

// Size is the file's length.
func (f *File) Size() int64 { return f.node.Size }

// Chunks lists the file's chunks (for prefetching).
func (f *File) Chunks() []ChunkRef { return f.chunks }

// ChunkAt returns the index of the chunk holding byte off.
func (f *File) ChunkAt(off int64) int {
	return sort.Search(len(f.chunks), func(i int) bool { return f.offsets[i+1] > off })
}

// ChunkOffset is where chunk i starts.
func (f *File) ChunkOffset(i int) int64 { return f.offsets[i] }

// CachedChunk returns chunk i's content if the blob cache holds it (and
// it has the size the chunk list says), without loading anything. The
// slice is shared with the cache: do not modify it.
func (f *File) CachedChunk(i int) ([]byte, bool) {
	if i < 0 || i >= len(f.chunks) {
		return nil, false
	}
	data, ok := f.r.CachedBlob(f.chunks[i].ID)
	if !ok || len(data) != int(f.chunks[i].Size) {
		return nil, false
	}
	return data, true
}

// ReadAtContext reads len(p) bytes at off, as io.ReaderAt does.
func (f *File) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %s: negative offset", f.node.Name)
	}
	if off >= f.node.Size {
		return 0, io.EOF
	}
	n := 0
	for i := f.ChunkAt(off); n < len(p) && i < len(f.chunks); i++ {
		data, err := f.r.LoadBlob(ctx, f.chunks[i].ID)
		if err != nil {
			return n, fmt.Errorf("read %s at %d: %w", f.node.Name, off+int64(n), err)
		}
		if len(data) != int(f.chunks[i].Size) {
			return n, fmt.Errorf("read %s: chunk %s is %d bytes, list says %d: %w", f.node.Name, f.chunks[i].ID.Short(), len(data), f.chunks[i].Size, ErrContentCorrupt)
		}
		within := off + int64(n) - f.offsets[i]
		n += copy(p[n:], data[within:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// ReadAt implements io.ReaderAt with a background context.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	return f.ReadAtContext(context.Background(), p, off)
}

var _ io.ReaderAt = (*File)(nil)

// Runs of a whole-file read: the chunks of a run are read together, and
// those of one pack lying close together with one request (readChunks).
// From an object store a request costs far more than the bytes of a
// compressed chunk (restoring pgbench scale 100 from MinIO on loopback
// took 15.4 s with one request per chunk against 1.5 s from a folder),
// and a run bounds the memory: ahead runs per file in flight (restore: 8
// files, 4 runs each, at most 64 MiB).
const (
	runChunks = 16
	runBytes  = 2 << 20
)

// maxWrite is the largest write WriteTo makes. A run is read as one, but
// written in pieces: on this kernel (6.18) a 2 MiB write(2) into the page
// cache cost far more system time than the same bytes in 128 KiB writes
// (a restore of pgbench scale 100 took 4.0-6.7 s of system time against
// 1.3-1.5 s, and twice the wall time).
const maxWrite = 128 << 10

// writePiece is how much of n remaining bytes the next write takes.
func writePiece(n int) int { return min(n, maxWrite) }

// chunkRun is chunks [start, end) of a file, read as one.
type chunkRun struct{ start, end int }

// runs cuts the file's chunks into runs of at most runChunks chunks and
// runBytes bytes (a bigger chunk is a run of its own).
func (f *File) runs() []chunkRun {
	var out []chunkRun
	for i := 0; i < len(f.chunks); {
		n := 1
		for n < runChunks && i+n < len(f.chunks) && f.offsets[i+n+1]-f.offsets[i] <= runBytes {
			n++
		}
		out = append(out, chunkRun{i, i + n})
		i += n
	}
	return out
}

// readRun reads run into buf (grown as needed), with readChunks, or when
// that fails (damage is read again, a repacked chunk found where it is
// now) one chunk at a time.
func (f *File) readRun(ctx context.Context, run chunkRun, buf []byte) ([]byte, error) {
	size := int(f.offsets[run.end] - f.offsets[run.start])
	if cap(buf) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	chunks := f.chunks[run.start:run.end]
	if len(chunks) > 1 && f.r.readChunks(ctx, chunks, buf) == nil {
		return buf, nil
	}
	for i, c := range chunks {
		at := f.offsets[run.start+i] - f.offsets[run.start]
		if err := f.r.readChunkInto(ctx, c, buf[at:at+int64(c.Size)]); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// ReadChunks reads chunks [first, end) of the file into buf (grown as
// needed) without adding them to the blob cache, those of one pack lying
// close together with one request: for hydration and copy-on-read, which
// read content once to store it locally, where a request per chunk would
// cost a round trip to an object store each.
func (f *File) ReadChunks(ctx context.Context, first, end int, buf []byte) ([]byte, error) {
	if first < 0 || end > len(f.chunks) || first > end {
		return nil, fmt.Errorf("read %s: chunks [%d, %d) of %d", f.node.Name, first, end, len(f.chunks))
	}
	data, err := f.readRun(ctx, chunkRun{first, end}, buf)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f.node.Name, err)
	}
	return data, nil
}

// WriteTo streams the whole file to w, reading up to ahead runs of
// chunks in parallel (restore uses it).
func (f *File) WriteTo(ctx context.Context, w io.Writer, ahead int) (int64, error) {
	if ahead < 1 {
		ahead = 1
	}
	type result struct {
		data []byte
		err  error
	}
	runs := f.runs()
	results := make([]chan result, len(runs))
	for i := range results {
		results[i] = make(chan result, 1)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// ahead buffers circulate: a run's buffer comes back once written,
	// so a whole-file copy allocates only ahead run buffers.
	bufs := make(chan []byte, ahead)
	for range ahead {
		bufs <- nil
	}
	go func() {
		for i, run := range runs {
			var buf []byte
			select {
			case buf = <-bufs:
			case <-ctx.Done():
				return
			}
			go func() {
				data, err := f.readRun(ctx, run, buf)
				results[i] <- result{data, err}
			}()
		}
	}()
	var written int64
	for i := range runs {
		var res result
		select {
		case res = <-results[i]:
		case <-ctx.Done():
			return written, ctx.Err()
		}
		if res.err != nil {
			return written, fmt.Errorf("read %s: %w", f.node.Name, res.err)
		}
		for data := res.data; len(data) > 0; data = data[writePiece(len(data)):] {
			piece := data[:writePiece(len(data))]
			n, err := w.Write(piece)
			written += int64(n)
			if err == nil && n < len(piece) {
				err = io.ErrShortWrite
			}
			if err != nil {
				return written, err
			}
		}
		bufs <- res.data
	}
	return written, nil
}

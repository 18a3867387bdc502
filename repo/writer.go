package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/pack"
)

// SplitKind chooses how a file is cut into chunks.
type SplitKind int

const (
	// SplitCDC cuts at content-defined boundaries: for files whose content
	// can shift.
	SplitCDC SplitKind = iota
	// SplitFixed cuts at fixed, page-aligned offsets (the repository's chunk
	// size): for files updated in place page by page.
	SplitFixed
)

// NodeMeta is the metadata a caller gives for a tree entry.
type NodeMeta struct {
	Mode    fs.FileMode // permission bits
	UID     uint32
	GID     uint32
	ModTime time.Time
}

// WriterStats is a running count for progress reports.
type WriterStats struct {
	Files, Dirs, Symlinks int64
	Bytes                 int64 // file bytes read so far
	Chunks, NewChunks     int64
	NewBytes              int64 // plaintext bytes of new chunks
}

// SnapshotWriter saves a stream of files as one snapshot. Files are read by
// the caller's goroutine (AddFile returns once the reader is drained) while
// a pool of workers hashes, compresses, encrypts and packs their chunks, and
// packs upload in the background. Nothing is visible to readers until
// Commit has written every blob, the index and the manifest.
//
// Add* methods may be called from one goroutine at a time.
type SnapshotWriter struct {
	r      *Repository
	ctx    context.Context
	cancel context.CancelFunc
	start  time.Time

	root  *buildDir
	jobs  chan *chunkJob
	files chan *fileJob

	workers   sync.WaitGroup
	finalized chan struct{}
	bufs      sync.Pool

	errMu sync.Mutex
	err   error

	storedAtStart               int64
	nFiles, nDirs, nSymlinks    atomic.Int64
	nBytes, nChunks, nNewChunks atomic.Int64
	nNewBytes                   atomic.Int64
	committed                   bool
}

type buildDir struct {
	node    Node
	entries map[string]*buildEntry
}

type buildEntry struct {
	dir  *buildDir
	leaf *Node
}

type chunkJob struct {
	buf  *[]byte
	data []byte
	ref  ChunkRef
	file *fileJob
}

type fileJob struct {
	node *Node
	jobs []*chunkJob
	wg   sync.WaitGroup
}

// NewSnapshotWriter starts a snapshot. Call Commit or Abort.
func (r *Repository) NewSnapshotWriter(ctx context.Context) *SnapshotWriter {
	ctx, cancel := context.WithCancel(ctx)
	w := &SnapshotWriter{
		r: r, ctx: ctx, cancel: cancel, start: r.Now(),
		root:      &buildDir{node: Node{Type: NodeDir, Mode: 0o700, ModTime: time.Unix(0, 0).UTC()}, entries: map[string]*buildEntry{}},
		jobs:      make(chan *chunkJob, 4*runtime.GOMAXPROCS(0)),
		files:     make(chan *fileJob, 1024),
		finalized: make(chan struct{}),
	}
	w.bufs.New = func() any { b := make([]byte, 0, max(r.cfg.ChunkSize, chunk.CDCMaxSize)); return &b }
	w.storedAtStart = r.StoredBytes()
	for range runtime.GOMAXPROCS(0) {
		w.workers.Add(1)
		go w.worker()
	}
	go w.finalizer()
	return w
}

func (w *SnapshotWriter) fail(err error) {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	if w.err == nil {
		w.err = err
		w.cancel()
	}
}

func (w *SnapshotWriter) failed() error {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	return w.err
}

func (w *SnapshotWriter) worker() {
	defer w.workers.Done()
	for j := range w.jobs {
		if w.failed() == nil {
			id, isNew, err := w.r.SaveBlob(w.ctx, pack.DataBlob, j.data)
			if err != nil {
				w.fail(err)
			} else {
				j.ref = ChunkRef{ID: id, Size: uint32(len(j.data))}
				w.nChunks.Add(1)
				if isNew {
					w.nNewChunks.Add(1)
					w.nNewBytes.Add(int64(len(j.data)))
				}
			}
		}
		*j.buf = j.data[:0]
		w.bufs.Put(j.buf)
		j.buf, j.data = nil, nil
		j.file.wg.Done()
	}
}

// finalizer turns each file's chunk list into node fields, in order.
func (w *SnapshotWriter) finalizer() {
	defer close(w.finalized)
	for f := range w.files {
		f.wg.Wait()
		if w.failed() != nil {
			continue
		}
		refs := make([]ChunkRef, len(f.jobs))
		var size int64
		for i, j := range f.jobs {
			refs[i] = j.ref
			size += int64(j.ref.Size)
		}
		f.jobs = nil
		f.node.Size = size
		if len(refs) <= inlineChunks {
			f.node.Chunks = refs
			continue
		}
		id, _, err := w.r.SaveBlob(w.ctx, pack.MetaBlob, EncodeContent(refs))
		if err != nil {
			w.fail(err)
			continue
		}
		f.node.Content = &id
	}
}

// dir returns the build directory at parts, creating missing ones.
func (w *SnapshotWriter) dir(parts []string) (*buildDir, error) {
	d := w.root
	for i, name := range parts {
		e, ok := d.entries[name]
		if !ok {
			// A fixed time keeps implicit directories from changing every
			// snapshot's trees; callers that care add directories explicitly.
			nd := &buildDir{node: Node{Name: name, Type: NodeDir, Mode: 0o700, ModTime: time.Unix(0, 0).UTC()}, entries: map[string]*buildEntry{}}
			d.entries[name] = &buildEntry{dir: nd}
			w.nDirs.Add(1)
			d = nd
			continue
		}
		if e.dir == nil {
			return nil, fmt.Errorf("snapshot path %q: %q is not a directory", joinParts(parts), joinParts(parts[:i+1]))
		}
		d = e.dir
	}
	return d, nil
}

func joinParts(p []string) string {
	s := ""
	for i, e := range p {
		if i > 0 {
			s += "/"
		}
		s += e
	}
	return s
}

func applyMeta(n *Node, m NodeMeta) {
	n.Mode = m.Mode & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	n.UID, n.GID = m.UID, m.GID
	n.ModTime = m.ModTime.UTC()
}

// AddDir records a directory (parents are created as needed). Adding the
// root ("" or ".") sets the root's metadata.
func (w *SnapshotWriter) AddDir(p string, meta NodeMeta) error {
	parts, err := SplitPath(p)
	if err != nil {
		return err
	}
	d, err := w.dir(parts)
	if err != nil {
		return err
	}
	name := d.node.Name
	applyMeta(&d.node, meta)
	d.node.Name = name
	return nil
}

func (w *SnapshotWriter) addLeaf(p string, n *Node) error {
	parts, err := SplitPath(p)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return fmt.Errorf("snapshot path %q: the root must be a directory", p)
	}
	parent, err := w.dir(parts[:len(parts)-1])
	if err != nil {
		return err
	}
	name := parts[len(parts)-1]
	if e, ok := parent.entries[name]; ok && e.dir != nil {
		return fmt.Errorf("snapshot path %q: already a directory", p)
	} else if ok {
		return fmt.Errorf("snapshot path %q: added twice", p)
	}
	n.Name = name
	parent.entries[name] = &buildEntry{leaf: n}
	return nil
}

// AddSymlink records a symbolic link.
func (w *SnapshotWriter) AddSymlink(p, target string, meta NodeMeta) error {
	n := &Node{Type: NodeSymlink, Target: target}
	applyMeta(n, meta)
	n.Mode = fs.ModePerm
	if err := w.addLeaf(p, n); err != nil {
		return err
	}
	w.nSymlinks.Add(1)
	return nil
}

// AddFile reads r to the end and records it as a regular file. It returns
// the number of bytes read. Chunks are stored in the background; errors
// from that work surface here on a later call or from Commit.
func (w *SnapshotWriter) AddFile(p string, meta NodeMeta, r io.Reader, kind SplitKind) (int64, error) {
	if err := w.failed(); err != nil {
		return 0, err
	}
	n := &Node{Type: NodeFile}
	applyMeta(n, meta)
	if err := w.addLeaf(p, n); err != nil {
		return 0, err
	}
	w.nFiles.Add(1)
	var split chunk.Splitter
	if kind == SplitFixed {
		s, err := chunk.NewFixed(r, w.r.cfg.ChunkSize)
		if err != nil {
			return 0, err
		}
		split = s
	} else {
		split = chunk.NewCDC(r, w.r.pol)
	}
	f := &fileJob{node: n}
	var read int64
	for {
		buf := w.bufs.Get().(*[]byte)
		data, err := split.Next(*buf)
		if errors.Is(err, io.EOF) {
			w.bufs.Put(buf)
			break
		}
		if err != nil {
			w.bufs.Put(buf)
			w.queueFile(f)
			err = fmt.Errorf("read %s: %w", p, err)
			w.fail(err)
			return read, err
		}
		read += int64(len(data))
		w.nBytes.Add(int64(len(data)))
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

func (w *SnapshotWriter) queueFile(f *fileJob) {
	w.files <- f
}

// Stats returns the running counts.
func (w *SnapshotWriter) Stats() WriterStats {
	return WriterStats{
		Files: w.nFiles.Load(), Dirs: w.nDirs.Load(), Symlinks: w.nSymlinks.Load(),
		Bytes: w.nBytes.Load(), Chunks: w.nChunks.Load(), NewChunks: w.nNewChunks.Load(), NewBytes: w.nNewBytes.Load(),
	}
}

// drain stops the pipeline and waits for it.
func (w *SnapshotWriter) drain() {
	if w.jobs == nil {
		return
	}
	close(w.jobs)
	w.workers.Wait()
	close(w.files)
	<-w.finalized
	w.jobs = nil
}

// SnapshotInfo is what the caller records in the manifest.
type SnapshotInfo struct {
	Kind      string
	Label     string
	StartTime time.Time // zero means when the writer was created
	EndTime   time.Time // zero means now
	Meta      []byte    // JSON, opaque to the repository
	// Attachments are stored as meta blobs, durable before the manifest
	// (see Snapshot.Attachments).
	Attachments map[string][]byte
}

// Commit stores the trees, makes everything durable, and writes the
// manifest last: a snapshot is listed only when all it needs is stored.
func (w *SnapshotWriter) Commit(ctx context.Context, info SnapshotInfo) (*Snapshot, error) {
	w.drain()
	defer w.cancel()
	if err := w.failed(); err != nil {
		return nil, err
	}
	root, err := w.saveTree(ctx, w.root)
	if err != nil {
		return nil, err
	}
	var attached map[string]chunk.ID
	for _, name := range slices.Sorted(maps.Keys(info.Attachments)) {
		id, _, err := w.r.SaveBlob(ctx, pack.MetaBlob, info.Attachments[name])
		if err != nil {
			return nil, fmt.Errorf("snapshot attachment %s: %w", name, err)
		}
		if attached == nil {
			attached = map[string]chunk.ID{}
		}
		attached[name] = id
	}
	if err := w.r.Flush(ctx); err != nil {
		return nil, fmt.Errorf("flush snapshot data: %w", err)
	}
	host, _ := os.Hostname()
	rootNode := w.root.node
	rootNode.Subtree = &root
	s := &Snapshot{
		Kind: info.Kind, Label: info.Label, Hostname: host,
		StartTime: info.StartTime, EndTime: info.EndTime, Root: root, RootNode: rootNode, Meta: info.Meta, Attachments: attached,
	}
	if s.StartTime.IsZero() {
		s.StartTime = w.start
	}
	if s.EndTime.IsZero() {
		s.EndTime = w.r.Now()
	}
	s.StartTime, s.EndTime = s.StartTime.UTC(), s.EndTime.UTC()
	st := w.Stats()
	s.Summary = Summary{
		Files: st.Files, Dirs: st.Dirs, Symlinks: st.Symlinks, Bytes: st.Bytes,
		Chunks: st.Chunks, NewChunks: st.NewChunks, NewBytes: st.NewBytes,
		StoredBytes: w.r.StoredBytes() - w.storedAtStart,
	}
	if err := w.r.saveSnapshot(ctx, s); err != nil {
		return nil, err
	}
	w.committed = true
	if err := w.r.CompactIndex(ctx); err != nil {
		// The snapshot is complete; only tidiness is lost.
		w.r.log.Warn("index compaction after the snapshot failed", "err", err)
	}
	return s, nil
}

// Abort stops the pipeline; what was uploaded stays for a later snapshot
// to reuse (or for prune to remove).
func (w *SnapshotWriter) Abort() {
	w.fail(errors.New("snapshot aborted"))
	w.drain()
}

func (w *SnapshotWriter) saveTree(ctx context.Context, d *buildDir) (chunk.ID, error) {
	t := &Tree{Nodes: make([]Node, 0, len(d.entries))}
	for _, e := range d.entries {
		if e.dir != nil {
			id, err := w.saveTree(ctx, e.dir)
			if err != nil {
				return chunk.ID{}, err
			}
			n := e.dir.node
			n.Subtree = &id
			t.Nodes = append(t.Nodes, n)
			continue
		}
		t.Nodes = append(t.Nodes, *e.leaf)
	}
	data, err := EncodeTree(t)
	if err != nil {
		return chunk.ID{}, fmt.Errorf("encode tree: %w", err)
	}
	id, _, err := w.r.SaveBlob(ctx, pack.MetaBlob, data)
	return id, err
}

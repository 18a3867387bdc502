package verify

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// Problem is one thing found wrong.
type Problem struct {
	Object  string `json:"object"` // the file (snapshot path or WAL name) or phase
	Chunk   string `json:"chunk,omitempty"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	s := p.Object
	if p.Chunk != "" {
		s += " (chunk " + p.Chunk + ")"
	}
	return s + ": " + p.Message
}

// WALFile names a stored WAL file to read.
type WALFile struct {
	Timeline uint32
	Name     string
}

// ChunkOptions configure Chunks.
type ChunkOptions struct {
	// WAL lists the WAL files recovery needs (from the restore plan).
	WAL []WALFile
	// SegmentSize is the cluster's WAL segment size, for checking the page
	// headers of complete segments; 0 means 16 MiB.
	SegmentSize uint64
	// Parallel is how many chunks are read at once; 0 means 8.
	Parallel int
	// MaxProblems stops collecting after this many; 0 means 100.
	MaxProblems int
	// Progress, if set, is called with chunk bytes read so far and the
	// total.
	Progress func(done, total int64)
}

// ChunkReport is the result of Chunks.
type ChunkReport struct {
	Files     int64         `json:"files"`
	Chunks    int64         `json:"chunks"` // distinct chunks read
	Bytes     int64         `json:"bytes"`
	WALFiles  int64         `json:"wal_files"`
	WALBytes  int64         `json:"wal_bytes"`
	Problems  []Problem     `json:"problems"`
	Duration  time.Duration `json:"-"`
	Truncated bool          `json:"problems_truncated,omitempty"`
}

type job struct {
	object string
	ref    repo.ChunkRef
}

// Chunks reads and authenticates every chunk of snapshot s (file content
// and the content lists and trees that lead to them) and every chunk of
// the WAL files in opts.WAL, comparing sizes with what the lists say and
// checking complete WAL segments' page headers. Each distinct chunk is
// read once.
func Chunks(ctx context.Context, r *repo.Repository, s *repo.Snapshot, opts ChunkOptions) (*ChunkReport, error) {
	start := time.Now()
	if opts.Parallel <= 0 {
		opts.Parallel = 8
	}
	if opts.MaxProblems <= 0 {
		opts.MaxProblems = 100
	}
	if opts.SegmentSize == 0 {
		opts.SegmentSize = wal.DefaultSegmentSize
	}
	rep := &ChunkReport{Problems: []Problem{}}
	var mu sync.Mutex
	problem := func(p Problem) {
		mu.Lock()
		defer mu.Unlock()
		if len(rep.Problems) >= opts.MaxProblems {
			rep.Truncated = true
			return
		}
		rep.Problems = append(rep.Problems, p)
	}

	// List first: the tree walk reads trees and content lists, which are
	// chunks too; a damaged one is a problem for the files below it.
	var jobs []job
	seen := map[chunk.ID]bool{}
	var total int64
	err := walkTolerant(ctx, r, s.Root, "", func(p string, n *repo.Node) {
		if n.Type != repo.NodeFile {
			return
		}
		rep.Files++
		refs, err := r.ChunkList(ctx, n)
		if err != nil {
			problem(Problem{Object: p, Message: "content list: " + err.Error()})
			return
		}
		var sum int64
		for _, c := range refs {
			sum += int64(c.Size)
			if !seen[c.ID] {
				seen[c.ID] = true
				jobs = append(jobs, job{object: p, ref: c})
				total += int64(c.Size)
			}
		}
		if sum != n.Size {
			problem(Problem{Object: p, Message: fmt.Sprintf("chunks hold %d bytes, the file is %d", sum, n.Size)})
		}
	}, func(p string, err error) {
		problem(Problem{Object: p + "/", Message: "directory: " + err.Error()})
	})
	if err != nil {
		return nil, err
	}

	// WAL files: catalogue entries, then their chunks.
	type walCheck struct {
		name string
		tli  uint32
		size int64
	}
	var segs []walCheck
	for _, w := range opts.WAL {
		wf, err := r.LoadWALFile(ctx, w.Timeline, w.Name)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			problem(Problem{Object: "WAL " + w.Name, Message: err.Error()})
			continue
		}
		rep.WALFiles++
		rep.WALBytes += wf.Size
		for _, c := range wf.Chunks {
			if !seen[c.ID] {
				seen[c.ID] = true
				jobs = append(jobs, job{object: "WAL " + w.Name, ref: c})
				total += int64(c.Size)
			}
		}
		if wal.Classify(w.Name) == wal.KindSegment {
			segs = append(segs, walCheck{w.Name, w.Timeline, wf.Size})
		}
	}

	var done atomic.Int64
	// ReadBlob leaves the blob cache alone (every chunk is read once, and
	// would only evict what others need) and fills a buffer of ours,
	// reused from one chunk to the next.
	bufs := sync.Pool{New: func() any { return new([]byte) }}
	var g errgroup.Group
	g.SetLimit(opts.Parallel)
	for _, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			buf := bufs.Get().(*[]byte)
			defer bufs.Put(buf)
			data, err := r.ReadBlob(ctx, j.ref.ID, *buf)
			if err == nil {
				*buf = data
			}
			// A damaged chunk is a problem to report, not a reason to stop.
			switch {
			case err != nil && ctx.Err() != nil:
			case err != nil:
				problem(Problem{Object: j.object, Chunk: j.ref.ID.Short(), Message: err.Error()})
			case len(data) != int(j.ref.Size):
				problem(Problem{Object: j.object, Chunk: j.ref.ID.Short(), Message: fmt.Sprintf("chunk has %d bytes, the list says %d", len(data), j.ref.Size)})
			}
			n := done.Add(int64(j.ref.Size))
			if opts.Progress != nil {
				opts.Progress(n, total)
			}
			return nil
		})
	}
	g.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rep.Chunks, rep.Bytes = int64(len(jobs)), total

	// Page headers of complete segments (their chunks are cached or
	// already reported).
	for _, sg := range segs {
		if uint64(sg.size) != opts.SegmentSize {
			problem(Problem{Object: "WAL " + sg.name, Message: fmt.Sprintf("segment is %d bytes, want %d", sg.size, opts.SegmentSize)})
			continue
		}
		data, _, err := r.LoadWAL(ctx, sg.tli, sg.name)
		if err != nil {
			continue // reported above
		}
		if _, err := wal.ValidateSegment(sg.name, data, opts.SegmentSize); err != nil {
			problem(Problem{Object: "WAL " + sg.name, Message: err.Error()})
		}
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

// walkTolerant walks a tree like repo.Walk, but a directory whose tree
// cannot be read is reported to bad and skipped instead of ending the
// walk.
func walkTolerant(ctx context.Context, r *repo.Repository, id chunk.ID, prefix string, fn func(string, *repo.Node), bad func(string, error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t, err := r.LoadTree(ctx, id)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return err
		}
		name := prefix
		if name == "" {
			name = "."
		}
		bad(name, err)
		return nil
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		p := n.Name
		if prefix != "" {
			p = prefix + "/" + n.Name
		}
		fn(p, n)
		if n.Type == repo.NodeDir {
			if err := walkTolerant(ctx, r, *n.Subtree, p, fn, bad); err != nil {
				return err
			}
		}
	}
	return nil
}

// Package chunkread reads a repository file's chunks the way an open file
// of a mount is read: through the repository's bounded blob cache, with
// the chunks ahead of a sequential reader loaded in parallel, in the
// background, by a Prefetcher. The browse nodes (package fs) and the
// overlay engine (fs/overlay) both read snapshot content through it.
package chunkread

import (
	"context"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/pgvault/pgvault/repo"
)

// Prefetcher loads chunks ahead of readers, in the background, into the
// repository's bounded blob cache (which merges a prefetch and a read of
// the same chunk into one backend load). It never blocks a read: when
// all its slots are busy, a prefetch is skipped. Safe for concurrent use.
type Prefetcher struct {
	r        *repo.Repository
	ctx      context.Context
	loads    errgroup.Group // limited to the parallel loads; never waited for (loads end with ctx)
	maxAhead int

	issued  atomic.Int64 // chunk loads started
	skipped atomic.Int64 // prefetches dropped because every slot was busy
}

// NewPrefetcher returns a prefetcher with parallel concurrent loads that
// reads at most maxAhead chunks ahead of a sequential reader. Loads stop
// when ctx ends.
func NewPrefetcher(ctx context.Context, r *repo.Repository, parallel, maxAhead int) *Prefetcher {
	if parallel < 1 {
		parallel = 8
	}
	if maxAhead < 1 {
		maxAhead = 16
	}
	p := &Prefetcher{r: r, ctx: ctx, maxAhead: maxAhead}
	p.loads.SetLimit(parallel)
	return p
}

// load starts a background load of chunk i of f unless all slots are busy.
func (p *Prefetcher) load(f *repo.File, i int) bool {
	id := f.Chunks()[i].ID
	started := p.loads.TryGo(func() error {
		// Errors are not reported here: the read that needs the chunk
		// loads it again and reports the failure itself.
		p.r.LoadBlob(p.ctx, id)
		return nil
	})
	if !started {
		p.skipped.Add(1)
		return false
	}
	p.issued.Add(1)
	return true
}

// sequentialSlack is how far a read may start from where the last one
// ended and still count as sequential: the kernel issues readahead
// requests concurrently, so they arrive slightly out of order.
const sequentialSlack = 1 << 20

// Readahead is the access pattern of one open file. The zero value is a
// file nothing has read yet; safe for concurrent use.
type Readahead struct {
	mu     sync.Mutex
	next   int64 // where the last read ended
	streak int   // sequential reads in a row
	issued int   // chunks below this index were already requested
}

// before is called before a read of n bytes at off of f: it starts loads
// of the read's own further chunks (so one large read fetches its chunks
// in parallel) and, for a sequential reader, of the chunks ahead, the
// window doubling with every sequential read up to maxAhead.
func (p *Prefetcher) before(ra *Readahead, f *repo.File, off int64, n int) {
	if p == nil || n <= 0 || off >= f.Size() {
		return
	}
	chunks := len(f.Chunks())
	first := f.ChunkAt(off)
	last := f.ChunkAt(min(off+int64(n), f.Size()) - 1)

	ra.mu.Lock()
	defer ra.mu.Unlock()
	d := off - ra.next
	if (ra.next == 0 && off == 0) || (ra.next > 0 && d >= -sequentialSlack && d <= sequentialSlack) {
		ra.streak++
		ra.next = max(ra.next, off+int64(n))
	} else {
		ra.streak = 0
		ra.issued = 0
		ra.next = off + int64(n)
	}
	end := last + 1 // exclusive
	if ra.streak >= 2 {
		end = min(chunks, last+1+min(p.maxAhead, 1<<min(ra.streak-1, 10)))
	}
	start := max(first+1, ra.issued)
	for i := start; i < end; i++ {
		if !p.load(f, i) {
			end = i
			break
		}
	}
	ra.issued = max(ra.issued, end)
}

// Read reads len(dst) bytes of f at off, as f.ReadAtContext does. With
// ra, the open file's access pattern, it first has p start loads of the
// chunks the read and a sequential reader will need; p may be nil (no
// prefetching), and so may ra (a one-off read).
func Read(ctx context.Context, p *Prefetcher, ra *Readahead, f *repo.File, dst []byte, off int64) (int, error) {
	if ra != nil {
		p.before(ra, f, off, len(dst))
	}
	return f.ReadAtContext(ctx, dst, off)
}

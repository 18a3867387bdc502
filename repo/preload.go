package repo

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/index"
)

// Preloading reads many blobs into the cache with few requests: blobs of
// one pack that lie close together are read as one range. On an object
// store every request is a round trip (tens of milliseconds), so two
// hundred small catalog files read one blob at a time cost seconds where
// a few ranges cost a few round trips.
const (
	// preloadGap is the largest gap between two blobs of a run: reading
	// it costs less than another request.
	preloadGap = 512 << 10
	// preloadRunMax bounds one request, so that runs can load in parallel
	// and a failed request wastes little.
	preloadRunMax = 4 << 20
)

// A BlobRun is blobs lying close together in one pack, in offset order,
// that PreloadRun reads with one request.
type BlobRun struct {
	pack     chunk.ID
	off, end int64
	blobs    []index.Entry
}

// Bytes is how many bytes the run's request reads.
func (r BlobRun) Bytes() int64 { return r.end - r.off }

// PlanPreload groups the blobs of ids that are indexed and not cached into
// runs, in pack and offset order (so the runs of a pack read through it
// once, front to back).
func (r *Repository) PlanPreload(ids []chunk.ID) []BlobRun {
	seen := make(map[chunk.ID]bool, len(ids))
	var es []index.Entry
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		if _, ok := r.cache.peek(id); ok {
			continue
		}
		if e, ok := r.idx.Lookup(id); ok {
			es = append(es, e)
		}
	}
	slices.SortFunc(es, func(a, b index.Entry) int {
		return cmp.Or(bytes.Compare(a.Pack[:], b.Pack[:]), cmp.Compare(a.Offset, b.Offset))
	})
	var runs []BlobRun
	for _, e := range es {
		off, end := int64(e.Offset), int64(e.Offset)+int64(e.Length)
		if n := len(runs); n > 0 {
			last := &runs[n-1]
			if last.pack == e.Pack && off >= last.end && off-last.end <= preloadGap && end-last.off <= preloadRunMax {
				last.end = end
				last.blobs = append(last.blobs, e)
				continue
			}
		}
		runs = append(runs, BlobRun{pack: e.Pack, off: off, end: end, blobs: []index.Entry{e}})
	}
	return runs
}

// PreloadRun reads run with one request and adds its blobs to the cache.
// It returns the plaintext bytes it added. A blob that does not open is
// left out: the read that needs it reads it again and reports any damage.
func (r *Repository) PreloadRun(ctx context.Context, run BlobRun) (int64, error) {
	h := backend.Handle{Type: backend.PackFile, Name: run.pack.String()}
	data, err := r.be.Load(ctx, h, run.off, run.end-run.off)
	if err != nil {
		return 0, fmt.Errorf("preload from pack %s: %w", run.pack.Short(), err)
	}
	var added int64
	for _, e := range run.blobs {
		at := int64(e.Offset) - run.off
		plain, err := r.openBlob(make([]byte, 0, e.PlainLen), e.Type, e.ID, data[at:at+int64(e.Length)])
		if err != nil {
			continue
		}
		r.cache.put(e.ID, plain)
		added += int64(len(plain))
	}
	return added, nil
}

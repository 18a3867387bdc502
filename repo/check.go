package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/index"
	"github.com/pgvault/pgvault/repo/pack"
)

// CheckOptions choose how deep Check looks.
type CheckOptions struct {
	// ReadData downloads every pack, decrypts every blob and re-hashes it.
	ReadData bool
	// Parallel is how many packs are read at once (ReadData); 0 means 2.
	Parallel int
	// Progress, if set, is called as packs are read.
	Progress func(done, total int, bytes int64)
}

// Problem is one finding, naming the object it is about.
type Problem struct {
	Object  string `json:"object"` // e.g. "pack 3fa2...", "snapshot 1a2b3c4d", "index 9f8e..."
	Message string `json:"message"`
}

func (p Problem) String() string { return p.Object + ": " + p.Message }

// CheckResult is what Check found. Errors mean data is missing or damaged;
// warnings are harmless leftovers (an interrupted writer's unindexed pack, a
// stale lock).
type CheckResult struct {
	Errors    []Problem `json:"errors"`
	Warnings  []Problem `json:"warnings"`
	Indexes   int       `json:"indexes"`
	Packs     int       `json:"packs"`
	Blobs     int       `json:"blobs"`
	Snapshots int       `json:"snapshots"`
	WALFiles  int       `json:"wal_files"`
	PacksRead int       `json:"packs_read"`
	BytesRead int64     `json:"bytes_read"`
}

type checker struct {
	r   *Repository
	res *CheckResult
	mu  sync.Mutex
	idx *masterIndex // built from the repository's objects, not the cache

	// Concurrent writers (wal stream, wal push, backup) may add index
	// objects while the check runs, and then snapshots or WAL entries
	// that need them. A chunk missing from the index is looked up again
	// after reading the index objects that appeared since, once per object
	// loaded after the last such refresh.
	seenIndex   map[string]bool
	refreshed   time.Time // when the index objects were last listed
	objectSince time.Time // when the object being checked was loaded
}

func (c *checker) errorf(object, format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.res.Errors = append(c.res.Errors, Problem{Object: object, Message: fmt.Sprintf(format, args...)})
}

func (c *checker) warnf(object, format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.res.Warnings = append(c.res.Warnings, Problem{Object: object, Message: fmt.Sprintf(format, args...)})
}

// Check verifies the repository's structure: every index object decodes,
// every indexed pack exists with the right size, every snapshot's trees,
// content lists and chunks are indexed, every WAL entry's chunks are
// indexed. With ReadData it also reads and authenticates every blob.
// The error return is for failing to run the check at all.
func (r *Repository) Check(ctx context.Context, opts CheckOptions) (*CheckResult, error) {
	c := &checker{r: r, res: &CheckResult{}, idx: newMasterIndex(r.be, r.codec, "", r.log), seenIndex: map[string]bool{}}
	if err := c.checkIndexes(ctx); err != nil {
		return nil, err
	}
	listed, err := c.checkPacks(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.checkSnapshots(ctx); err != nil {
		return nil, err
	}
	if err := c.checkWAL(ctx); err != nil {
		return nil, err
	}
	if err := c.checkLocks(ctx); err != nil {
		return nil, err
	}
	if opts.ReadData {
		if err := c.readData(ctx, listed, opts); err != nil {
			return nil, err
		}
	}
	sortProblems(c.res.Errors)
	sortProblems(c.res.Warnings)
	return c.res, nil
}

func sortProblems(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int { return strings.Compare(a.Object, b.Object) })
}

func (c *checker) checkIndexes(ctx context.Context) error {
	if err := c.loadIndexes(ctx); err != nil {
		return err
	}
	c.res.Blobs = c.idx.Count()
	return nil
}

// errNotItsName is a read whose bytes do not hash to the object's name.
var errNotItsName = fmt.Errorf("%w: content does not match its name", chunk.ErrMetaCorrupt)

// loadNamed reads an object named by the SHA-256 of its content, reading
// it again (readAuthentic) while the bytes read do not match the name: the
// check reports damage in storage, not a bit flipped on the way, which it
// notes as a warning. Bytes that never matched are returned without an
// error, for the caller to report what is wrong with them.
func (c *checker) loadNamed(ctx context.Context, h backend.Handle, id chunk.ID, obj string) ([]byte, error) {
	var data []byte
	reads := 0
	err := readAuthentic(ctx, c.r.log, obj, func(ctx context.Context) error {
		reads++
		b, err := c.r.be.Load(ctx, h, 0, 0)
		if err != nil {
			return err
		}
		data = b
		if sha256.Sum256(b) != id {
			return errNotItsName
		}
		return nil
	})
	if errors.Is(err, errNotItsName) {
		return data, nil
	}
	if err == nil && reads > 1 {
		c.warnf(obj, "read damaged %d time(s), then whole: the damage was on the way (network, memory), not in storage", reads-1)
	}
	return data, err
}

// loadIndexes reads and checks the index objects not read yet.
func (c *checker) loadIndexes(ctx context.Context) error {
	c.refreshed = time.Now()
	var names []string
	if err := c.r.be.List(ctx, backend.IndexFile, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	}); err != nil {
		return fmt.Errorf("list index: %w", err)
	}
	for _, name := range names {
		if c.seenIndex[name] {
			continue
		}
		c.seenIndex[name] = true
		obj := "index " + name
		id, err := chunk.ParseID(name)
		if err != nil {
			c.warnf(obj, "not an index object name; ignored")
			continue
		}
		sealed, err := c.loadNamed(ctx, backend.Handle{Type: backend.IndexFile, Name: name}, id, obj)
		if errors.Is(err, backend.ErrNotFound) {
			continue // removed while we checked (compaction)
		}
		if err != nil {
			return fmt.Errorf("load index %s: %w", id.Short(), err)
		}
		if sha256.Sum256(sealed) != id {
			c.errorf(obj, "content does not match its name (damaged or truncated)")
		}
		plain, err := c.r.codec.OpenMeta(indexLabel, sealed)
		if err != nil {
			c.errorf(obj, "%v", err)
			continue
		}
		tab, err := index.Decode(plain)
		if err != nil {
			c.errorf(obj, "%v", err)
			continue
		}
		c.idx.mu.Lock()
		c.idx.tables = append(c.idx.tables, &table{t: tab, covers: []chunk.ID{id}})
		c.idx.mu.Unlock()
		c.res.Indexes++
	}
	return nil
}

// lookup finds a blob in the index, reading the index objects written
// since the last listing if the object being checked is newer than it.
func (c *checker) lookup(ctx context.Context, id chunk.ID) (index.Entry, bool) {
	if e, ok := c.idx.Lookup(id); ok {
		return e, true
	}
	if !c.refreshed.Before(c.objectSince) {
		return index.Entry{}, false
	}
	if err := c.loadIndexes(ctx); err != nil {
		return index.Entry{}, false
	}
	_ = c.r.idx.load(ctx) // the repository's own index, which LoadBlob uses
	return c.idx.Lookup(id)
}

// checkPacks compares the packs the index names with the packs stored.
func (c *checker) checkPacks(ctx context.Context) (map[chunk.ID]int64, error) {
	listed := map[chunk.ID]int64{}
	if err := c.r.be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		id, err := chunk.ParseID(fi.Name)
		if err != nil {
			c.warnf("pack "+fi.Name, "not a pack object name; ignored")
			return nil
		}
		listed[id] = fi.Size
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	indexed := c.idx.Packs()
	blobsIn := map[chunk.ID]int{}
	c.idx.Each(func(e index.Entry) { blobsIn[e.Pack]++ })
	for id, p := range indexed {
		size, ok := listed[id]
		switch {
		case !ok:
			c.errorf("pack "+id.String(), "missing: the index lists %d blobs in it", blobsIn[id])
		case size != int64(p.Size):
			c.errorf("pack "+id.String(), "is %d bytes, the index says %d (truncated or replaced)", size, p.Size)
		}
	}
	for id := range listed {
		if _, ok := indexed[id]; !ok {
			c.warnf("pack "+id.String(), "not in any index (left by an interrupted writer; prune removes it)")
		}
	}
	c.res.Packs = len(listed)
	return listed, nil
}

func (c *checker) checkSnapshots(ctx context.Context) error {
	var names []string
	if err := c.r.be.List(ctx, backend.SnapshotFile, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	}); err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	seenTrees := map[chunk.ID]bool{}
	seenContent := map[chunk.ID]bool{}
	for _, name := range names {
		c.res.Snapshots++
		c.objectSince = time.Now()
		s, err := c.r.LoadSnapshot(ctx, name)
		if err != nil {
			c.errorf("snapshot "+short(name), "%v", err)
			continue
		}
		c.checkTree(ctx, s, s.Root, "", seenTrees, seenContent)
		for _, name := range slices.Sorted(maps.Keys(s.Attachments)) {
			if _, err := c.r.LoadBlob(ctx, s.Attachments[name]); err != nil {
				c.errorf("snapshot "+s.ShortID(), "attachment %s: %v", name, err)
			}
		}
	}
	return nil
}

func (c *checker) checkTree(ctx context.Context, s *Snapshot, id chunk.ID, p string, seenTrees, seenContent map[chunk.ID]bool) {
	if seenTrees[id] {
		return
	}
	seenTrees[id] = true
	obj := "snapshot " + s.ShortID()
	where := "/" + p
	if _, ok := c.lookup(ctx, id); !ok {
		c.errorf(obj, "%s: tree %s is not in the index", where, id.Short())
		return
	}
	data, err := c.r.LoadBlob(ctx, id)
	if err != nil {
		c.errorf(obj, "%s: %v", where, err)
		return
	}
	t, err := DecodeTree(data)
	if err != nil {
		c.errorf(obj, "%s: tree %s: %v", where, id.Short(), err)
		return
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		np := n.Name
		if p != "" {
			np = p + "/" + n.Name
		}
		switch n.Type {
		case NodeDir:
			c.checkTree(ctx, s, *n.Subtree, np, seenTrees, seenContent)
		case NodeFile:
			refs := n.Chunks
			if n.Content != nil {
				if seenContent[*n.Content] {
					continue
				}
				seenContent[*n.Content] = true
				if _, ok := c.lookup(ctx, *n.Content); !ok {
					c.errorf(obj, "/%s: content list %s is not in the index", np, n.Content.Short())
					continue
				}
				var err error
				if refs, err = c.r.ChunkList(ctx, n); err != nil {
					c.errorf(obj, "/%s: %v", np, err)
					continue
				}
			}
			c.checkChunks(ctx, obj, "/"+np, refs, n.Size)
		}
	}
}

func (c *checker) checkChunks(ctx context.Context, obj, where string, refs []ChunkRef, size int64) {
	var sum int64
	for _, ref := range refs {
		sum += int64(ref.Size)
		e, ok := c.lookup(ctx, ref.ID)
		if !ok {
			c.errorf(obj, "%s: chunk %s is not in the index", where, ref.ID.Short())
			continue
		}
		if e.PlainLen != ref.Size {
			c.errorf(obj, "%s: chunk %s is %d bytes in the index, %d in the file", where, ref.ID.Short(), e.PlainLen, ref.Size)
		}
	}
	if sum != size {
		c.errorf(obj, "%s: chunks hold %d bytes, the file is %d", where, sum, size)
	}
}

func (c *checker) checkWAL(ctx context.Context) error {
	entries, err := c.r.ListWAL(ctx)
	if err != nil {
		return err
	}
	for _, e := range entries {
		c.res.WALFiles++
		obj := fmt.Sprintf("wal %08X/%s", e.Timeline, e.Name)
		c.objectSince = time.Now()
		wf, err := c.r.LoadWALFile(ctx, e.Timeline, e.Name)
		if errors.Is(err, ErrWALNotFound) {
			continue
		}
		if err != nil {
			c.errorf(obj, "%v", err)
			continue
		}
		c.checkChunks(ctx, obj, e.Name, wf.Chunks, wf.Size)
	}
	return nil
}

func (c *checker) checkLocks(ctx context.Context) error {
	locks, err := c.r.Locks(ctx)
	if err != nil {
		return err
	}
	for _, l := range locks {
		if l.Purpose == "unreadable lock" || l.Stale(c.r.Now()) {
			c.warnf("lock "+l.Name, "stale: %s (removed by `pgvault repo unlock`)", l)
		}
	}
	return nil
}

// readData reads every pack and authenticates every blob in it, at most
// opts.Parallel at a time. Damage is a finding, not an error; an error
// (a pack that cannot be read at all) ends the pass: the reads under way
// see ctx cancelled and no new one starts, instead of every remaining
// pack being tried with the full retry budget.
func (c *checker) readData(ctx context.Context, listed map[chunk.ID]int64, opts CheckOptions) error {
	ids := slices.SortedFunc(maps.Keys(listed), func(a, b chunk.ID) int { return bytes.Compare(a[:], b[:]) }) // name order
	par := opts.Parallel
	if par <= 0 {
		par = 2
	}
	// Packs() builds a map: count once, not for every pack read.
	total := len(c.idx.Packs())
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(par)
	for _, id := range ids {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err // cancelled while waiting for a free worker
			}
			return c.readPack(gctx, id, total, opts)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

func (c *checker) readPack(ctx context.Context, id chunk.ID, total int, opts CheckOptions) error {
	obj := "pack " + id.String()
	data, err := c.loadNamed(ctx, backend.Handle{Type: backend.PackFile, Name: id.String()}, id, obj)
	if errors.Is(err, backend.ErrNotFound) {
		return nil // removed while we checked; the structure pass reports missing packs
	}
	if err != nil {
		return fmt.Errorf("read pack %s: %w", id.Short(), err)
	}
	c.mu.Lock()
	c.res.PacksRead++
	c.res.BytesRead += int64(len(data))
	done, bytes := c.res.PacksRead, c.res.BytesRead
	c.mu.Unlock()
	if opts.Progress != nil {
		opts.Progress(done, total, bytes)
	}
	if sha256.Sum256(data) != id {
		c.errorf(obj, "content does not match its name (damaged)")
	}
	blobs, err := pack.Parse(c.r.codec, data)
	if err != nil {
		c.errorf(obj, "%v", err)
		// Fall back to the index's view so damaged packs still name blobs.
		blobs = nil
		c.idx.Each(func(e index.Entry) {
			if e.Pack == id {
				blobs = append(blobs, pack.Blob{Type: e.Type, ID: e.ID, Offset: e.Offset, Length: e.Length, PlainLen: e.PlainLen})
			}
		})
	}
	for _, b := range blobs {
		if int64(b.Offset)+int64(b.Length) > int64(len(data)) {
			c.errorf(obj, "blob %s lies past the end of the pack", b.ID.Short())
			continue
		}
		plain, err := c.r.openBlob(nil, b.Type, b.ID, data[b.Offset:b.Offset+b.Length])
		if err == nil {
			err = c.r.codec.Verify(b.ID, plain)
		}
		if err != nil {
			c.errorf(obj, "%v", err)
			continue
		}
		if e, ok := c.idx.Lookup(b.ID); ok && e.Pack == id && (e.Offset != b.Offset || e.Length != b.Length) {
			c.errorf(obj, "blob %s: the index says %d+%d, the pack header %d+%d", b.ID.Short(), e.Offset, e.Length, b.Offset, b.Length)
		}
	}
	return nil
}

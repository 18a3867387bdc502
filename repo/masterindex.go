package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/internal/atomicfile"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/index"
	"github.com/pgvault/pgvault/repo/pack"
)

const (
	indexLabel = "index"
	// maxTables is how many tables lookups search before they are merged
	// into one local table; each costs a binary search per lookup.
	maxTables = 12
)

// table is one searchable index table and where its bytes live.
type table struct {
	t      *index.Table
	covers []chunk.ID // repository index objects this table holds
	mapped []byte     // non-nil when t's bytes are a memory map
}

// masterIndex answers "where is blob X" across every index object of the
// repository, plus the blobs this process uploaded but has not yet written
// an index object for. Safe for concurrent use.
type masterIndex struct {
	be       backend.Backend
	codec    *chunk.Codec
	cacheDir string // "" keeps tables on the heap
	log      *slog.Logger

	mu      sync.RWMutex
	tables  []*table
	loaded  map[chunk.ID]bool // index objects present in tables
	pending map[chunk.ID]index.Entry
	// pendingPacks are packs uploaded but not yet in an index object.
	pendingPacks map[chunk.ID]index.PackInfo
	// own are the index objects this process wrote since its last
	// compaction (their plaintext), so that it can fold them into one.
	own []ownIndex
	// retain keeps the tables of our own index objects for lookups. A
	// concurrent writer never looks blobs up, so it keeps none.
	retain bool
}

type ownIndex struct {
	id    chunk.ID
	plain []byte
}

func newMasterIndex(be backend.Backend, codec *chunk.Codec, cacheDir string, log *slog.Logger) *masterIndex {
	return &masterIndex{
		be: be, codec: codec, cacheDir: cacheDir, log: log,
		loaded:       map[chunk.ID]bool{},
		retain:       true,
		pending:      map[chunk.ID]index.Entry{},
		pendingPacks: map[chunk.ID]index.PackInfo{},
	}
}

// Lookup finds a blob.
func (m *masterIndex) Lookup(id chunk.ID) (index.Entry, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if e, ok := m.pending[id]; ok {
		return e, true
	}
	for i := len(m.tables) - 1; i >= 0; i-- {
		if e, ok := m.tables[i].t.Lookup(id); ok {
			return e, true
		}
	}
	return index.Entry{}, false
}

// Has reports whether a blob is stored (durably, or uploaded by us).
func (m *masterIndex) Has(id chunk.ID) bool {
	_, ok := m.Lookup(id)
	return ok
}

// Each calls fn for every entry of every table and pending entry. A blob
// stored in several packs may be reported more than once.
func (m *masterIndex) Each(fn func(index.Entry)) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, t := range m.tables {
		for i := 0; i < t.t.Len(); i++ {
			fn(t.t.At(i))
		}
	}
	for _, e := range m.pending {
		fn(e)
	}
}

// Packs returns every pack the index knows, with its size and type.
func (m *masterIndex) Packs() map[chunk.ID]index.PackInfo {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := map[chunk.ID]index.PackInfo{}
	for _, t := range m.tables {
		for _, p := range t.t.Packs() {
			out[p.ID] = p
		}
	}
	for id, p := range m.pendingPacks {
		out[id] = p
	}
	return out
}

// Count returns the number of distinct-or-not entries across tables; it is
// exact when no blob is stored twice.
func (m *masterIndex) Count() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	n := len(m.pending)
	for _, t := range m.tables {
		n += t.t.Len()
	}
	return n
}

// addPack records the blobs of a pack that is now durable in the backend.
func (m *masterIndex) addPack(p index.PackInfo, blobs []pack.Blob) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pendingPacks[p.ID] = p
	for _, b := range blobs {
		m.pending[b.ID] = index.Entry{ID: b.ID, Pack: p.ID, Type: b.Type, Offset: b.Offset, Length: b.Length, PlainLen: b.PlainLen}
	}
}

// flush writes one index object holding every pending entry. Entries that
// arrive while it writes stay pending for the next flush.
func (m *masterIndex) flush(ctx context.Context) error {
	m.mu.Lock()
	if len(m.pendingPacks) == 0 {
		m.mu.Unlock()
		return nil
	}
	packs := slices.SortedFunc(maps.Values(m.pendingPacks), func(a, b index.PackInfo) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	entries := slices.Collect(maps.Values(m.pending))
	m.mu.Unlock()

	plain, err := index.Encode(nil, packs, entries)
	if err != nil {
		return err
	}
	sealed := m.codec.SealMeta(nil, indexLabel, plain)
	id := chunk.ID(sha256.Sum256(sealed))
	if err := m.be.Save(ctx, backend.Handle{Type: backend.IndexFile, Name: id.String()}, sealed); err != nil {
		return fmt.Errorf("save index %s: %w", id.Short(), err)
	}
	tab, err := index.Decode(plain)
	if err != nil {
		return fmt.Errorf("index %s we just wrote: %w", id.Short(), err)
	}
	m.writeCache(id.String(), plain)

	m.mu.Lock()
	if m.retain {
		m.tables = append(m.tables, &table{t: tab, covers: []chunk.ID{id}})
	}
	m.loaded[id] = true
	m.own = append(m.own, ownIndex{id: id, plain: plain})
	for _, p := range packs {
		delete(m.pendingPacks, p.ID)
	}
	for _, e := range entries {
		if cur, ok := m.pending[e.ID]; ok && cur.Pack == e.Pack {
			delete(m.pending, e.ID)
		}
	}
	m.mu.Unlock()
	return m.maybeMerge()
}

// compactOwn folds the index objects this process wrote since the last
// compaction into one, then removes them: a WAL streamer flushes every
// second, and thousands of tiny index objects would make every later
// Open list and download them all. Readers that loaded the small objects
// keep their entries; the packs they name are untouched.
func (m *masterIndex) compactOwn(ctx context.Context) error {
	m.mu.Lock()
	own := m.own
	m.own = nil
	m.mu.Unlock()
	if len(own) < 2 {
		m.mu.Lock()
		m.own = append(own, m.own...)
		m.mu.Unlock()
		return nil
	}
	tables := make([]*index.Table, 0, len(own))
	supersedes := make([]chunk.ID, 0, len(own))
	for _, o := range own {
		t, err := index.Decode(o.plain)
		if err != nil {
			return fmt.Errorf("compact index: our own index %s: %w", o.id.Short(), err)
		}
		tables = append(tables, t)
		supersedes = append(supersedes, o.id)
	}
	var buf bytes.Buffer
	if err := index.Merge(&buf, supersedes, tables); err != nil {
		return err
	}
	sealed := m.codec.SealMeta(nil, indexLabel, buf.Bytes())
	id := chunk.ID(sha256.Sum256(sealed))
	if err := m.be.Save(ctx, backend.Handle{Type: backend.IndexFile, Name: id.String()}, sealed); err != nil {
		// Keep the small objects: they are still valid.
		m.mu.Lock()
		m.own = append(own, m.own...)
		m.mu.Unlock()
		return fmt.Errorf("save compacted index: %w", err)
	}
	m.writeCache(id.String(), buf.Bytes())
	m.mu.Lock()
	m.loaded[id] = true
	m.mu.Unlock()
	for _, o := range own {
		err := m.be.Remove(ctx, backend.Handle{Type: backend.IndexFile, Name: o.id.String()})
		if err != nil && !errors.Is(err, backend.ErrNotFound) {
			m.log.Warn("could not remove an index object folded into a compacted one; prune will", "index", o.id.Short(), "err", err)
		}
	}
	return nil
}

// loadConcurrency is how many index objects are fetched and opened at once:
// a first open on a new machine reads every index object, and an object
// store answers each request after a round trip.
const loadConcurrency = 8

// load brings the index up to date with the repository: every index object
// not yet loaded is read (from the local cache when possible).
func (m *masterIndex) load(ctx context.Context) error {
	f, err := m.fetch(ctx)
	if err != nil {
		return err
	}
	return m.open(ctx, f)
}

// fetched is what fetch found: the index objects to add, in listing
// order, and the sealed bytes of those the local cache lacks.
type fetched struct {
	toOpen []chunk.ID
	sealed map[chunk.ID][]byte
}

// fetch lists the index objects and downloads those neither loaded nor in
// the local cache. It needs no key (Open runs it while the KDF derives
// one) and leaves the codec alone.
func (m *masterIndex) fetch(ctx context.Context) (*fetched, error) {
	var present []chunk.ID
	err := m.be.List(ctx, backend.IndexFile, func(fi backend.FileInfo) error {
		id, err := chunk.ParseID(fi.Name)
		if err != nil {
			m.log.Warn("ignoring an object in index/ that is not an index", "name", fi.Name)
			return nil
		}
		present = append(present, id)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list index: %w", err)
	}
	presentSet := map[chunk.ID]bool{}
	for _, id := range present {
		presentSet[id] = true
	}

	m.mu.RLock()
	haveAny := len(m.tables) > 0
	m.mu.RUnlock()
	if !haveAny {
		m.adoptMerged(presentSet)
	}

	f := &fetched{sealed: map[chunk.ID][]byte{}}
	var download []chunk.ID
	m.mu.RLock()
	for _, id := range present {
		if m.loaded[id] {
			continue
		}
		f.toOpen = append(f.toOpen, id)
		if m.cacheDir != "" {
			if _, err := os.Stat(filepath.Join(m.cacheDir, id.String())); err == nil {
				continue // opened from the cache; a damaged entry is fetched then
			}
		}
		download = append(download, id)
	}
	m.mu.RUnlock()

	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(loadConcurrency)
	for _, id := range download {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err // another download failed
			}
			sealed, err := m.be.Load(gctx, backend.Handle{Type: backend.IndexFile, Name: id.String()}, 0, 0)
			if err != nil {
				return fmt.Errorf("load index %s: %w", id.Short(), err)
			}
			mu.Lock()
			f.sealed[id] = sealed
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return f, nil
}

// open decrypts and decodes what fetch found and adds it to the tables.
func (m *masterIndex) open(ctx context.Context, f *fetched) error {
	tabs := make([]*table, len(f.toOpen))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(loadConcurrency)
	for i, id := range f.toOpen {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err // another table failed
			}
			tab, mapped, err := m.loadOne(gctx, id, f.sealed[id])
			if err != nil {
				return err
			}
			tabs[i] = &table{t: tab, covers: []chunk.ID{id}, mapped: mapped}
			return nil
		})
	}
	err := g.Wait()
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		for _, t := range tabs {
			if t != nil && t.mapped != nil {
				unix.Munmap(t.mapped)
			}
		}
		return err
	}
	m.mu.Lock()
	for i, id := range f.toOpen {
		if !m.loaded[id] {
			m.tables = append(m.tables, tabs[i])
			m.loaded[id] = true
		} else if tabs[i].mapped != nil {
			unix.Munmap(tabs[i].mapped)
		}
	}
	m.mu.Unlock()
	return m.maybeMerge()
}

// loadOne reads index object id, preferring the decrypted copy in the
// cache; sealed, when not nil, is the object as fetch downloaded it.
func (m *masterIndex) loadOne(ctx context.Context, id chunk.ID, sealed []byte) (*index.Table, []byte, error) {
	if m.cacheDir != "" && sealed == nil {
		if mapped, err := mmapFile(filepath.Join(m.cacheDir, id.String())); err == nil {
			if tab, err := index.Decode(mapped); err == nil {
				return tab, mapped, nil
			}
			unix.Munmap(mapped)
			m.log.Warn("local index cache entry is damaged; reloading it from the repository", "index", id.Short())
		}
	}
	var plain []byte
	err := readAuthentic(ctx, m.log, "index "+id.Short(), func(ctx context.Context) error {
		if sealed == nil { // not fetched yet, or a re-read
			var err error
			h := backend.Handle{Type: backend.IndexFile, Name: id.String()}
			if sealed, err = m.be.Load(ctx, h, 0, 0); err != nil {
				return fmt.Errorf("load index %s: %w", id.Short(), err)
			}
		}
		var err error
		plain, err = m.codec.OpenMeta(indexLabel, sealed)
		sealed = nil
		if err != nil {
			return fmt.Errorf("index %s: %w", id.Short(), err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	tab, err := index.Decode(plain)
	if err != nil {
		return nil, nil, fmt.Errorf("index %s: %w", id.Short(), err)
	}
	if m.writeCache(id.String(), plain) {
		if mapped, err := mmapFile(filepath.Join(m.cacheDir, id.String())); err == nil {
			if t2, err := index.Decode(mapped); err == nil {
				return t2, mapped, nil
			}
			unix.Munmap(mapped)
		}
	}
	return tab, nil, nil
}

// adoptMerged starts from the largest cached merged table whose members are
// all still in the repository, so a fresh process does not re-read
// thousands of small tables. Stale merged tables are removed.
func (m *masterIndex) adoptMerged(present map[chunk.ID]bool) {
	if m.cacheDir == "" {
		return
	}
	names, _ := filepath.Glob(filepath.Join(m.cacheDir, "merged-*"))
	var best *table
	for _, name := range names {
		mapped, err := mmapFile(name)
		if err != nil {
			continue
		}
		tab, err := index.Decode(mapped)
		stale := err != nil
		if err == nil {
			for _, id := range tab.Supersedes() {
				if !present[id] {
					stale = true
					break
				}
			}
		}
		if stale {
			unix.Munmap(mapped)
			os.Remove(name)
			continue
		}
		if best == nil || len(tab.Supersedes()) > len(best.covers) {
			if best != nil {
				unix.Munmap(best.mapped)
			}
			best = &table{t: tab, covers: tab.Supersedes(), mapped: mapped}
		} else {
			unix.Munmap(mapped)
		}
	}
	if best == nil {
		return
	}
	m.mu.Lock()
	m.tables = append(m.tables, best)
	for _, id := range best.covers {
		m.loaded[id] = true
	}
	m.mu.Unlock()
}

// maybeMerge merges all tables into one cached, memory-mapped table once
// there are too many to search quickly. Without a cache dir it does nothing.
func (m *masterIndex) maybeMerge() error {
	m.mu.RLock()
	n := len(m.tables)
	m.mu.RUnlock()
	if m.cacheDir == "" || n <= maxTables {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	tabs := make([]*index.Table, 0, len(m.tables))
	var covers []chunk.ID
	for i := len(m.tables) - 1; i >= 0; i-- { // newest first wins duplicates
		tabs = append(tabs, m.tables[i].t)
		covers = append(covers, m.tables[i].covers...)
	}
	slices.SortFunc(covers, func(a, b chunk.ID) int { return bytes.Compare(a[:], b[:]) })
	h := sha256.New()
	for _, c := range covers {
		h.Write(c[:])
	}
	name := filepath.Join(m.cacheDir, "merged-"+hex.EncodeToString(h.Sum(nil))[:32])
	if err := writeMerged(name, covers, tabs); err != nil {
		m.log.Warn("cannot merge index tables in the cache; lookups stay slower", "err", err)
		return nil
	}
	mapped, err := mmapFile(name)
	if err != nil {
		return nil
	}
	tab, err := index.Decode(mapped)
	if err != nil {
		unix.Munmap(mapped)
		return fmt.Errorf("merged index table %s: %w", name, err)
	}
	old := m.tables
	m.tables = []*table{{t: tab, covers: covers, mapped: mapped}}
	// Lookups copy entries out under the read lock, so once we hold the
	// write lock nothing points into the old maps.
	for _, t := range old {
		if t.mapped != nil {
			unix.Munmap(t.mapped)
		}
	}
	return nil
}

// writeMerged writes the merged table of tabs to the cache file name,
// whole or not at all, without a sync (see writeCache).
func writeMerged(name string, covers []chunk.ID, tabs []*index.Table) error {
	f, err := atomicfile.Create(name, atomicfile.Options{NoSync: true})
	if err != nil {
		return err
	}
	defer f.Abort()
	if err := index.Merge(f, covers, tabs); err != nil {
		return err
	}
	return f.Commit()
}

// writeCache stores a decrypted index table in the cache, whole or not at
// all but without a sync: the cache is rebuilt from the repository
// whenever an entry is missing, and a table a crash damaged fails
// index.Decode and is fetched again, so a sync per table would only slow
// a first open down.
func (m *masterIndex) writeCache(name string, plain []byte) bool {
	if m.cacheDir == "" {
		return false
	}
	return atomicfile.WriteFile(filepath.Join(m.cacheDir, name), plain, atomicfile.Options{NoSync: true}) == nil
}

// close unmaps every table.
func (m *masterIndex) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range m.tables {
		if t.mapped != nil {
			unix.Munmap(t.mapped)
		}
	}
	m.tables = nil
}

func mmapFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() == 0 {
		return nil, errors.New("empty file")
	}
	return unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
}

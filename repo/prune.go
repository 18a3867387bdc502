package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/index"
	"github.com/pgvault/pgvault/repo/pack"
)

// PruneOptions tune Prune.
type PruneOptions struct {
	// Grace protects recent packs: a pack younger than this is neither
	// deleted nor repacked, so writers running now (a WAL streamer never
	// stops) cannot lose a blob they just stored or reused. Default
	// DefaultPruneGrace; must exceed concurrent writers' ReuseWindow.
	Grace time.Duration
	// RepackUnused repacks a pack when at least this fraction of its bytes
	// is garbage (default 0.2).
	RepackUnused float64
	// SmallPack repacks old packs smaller than this (default 4 MiB): a WAL
	// streamer writes a small pack every flush, and prune merges them.
	SmallPack int64
	// DryRun computes everything and deletes nothing.
	DryRun bool
	// Progress, if set, reports the phase names as prune moves on.
	Progress func(phase string)
	// IgnoreSnapshot and IgnoreWAL leave references out of the count as if
	// those snapshots and WAL files were already deleted: a dry run of a
	// retention policy reports what it would really free.
	IgnoreSnapshot func(id string) bool
	IgnoreWAL      func(tli uint32, name string) bool
}

// PruneResult reports what Prune did (or, for a dry run, would do).
type PruneResult struct {
	DryRun          bool  `json:"dry_run"`
	Packs           int   `json:"packs"`
	PacksDeleted    int   `json:"packs_deleted"`
	PacksRepacked   int   `json:"packs_repacked"`
	PacksYoung      int   `json:"packs_young"` // untouched: younger than the grace period
	PacksUnindexed  int   `json:"packs_unindexed_deleted"`
	NewPacks        int   `json:"new_packs"`
	BlobsReferenced int   `json:"blobs_referenced"`
	BlobsRemoved    int   `json:"blobs_removed"`
	BytesBefore     int64 `json:"bytes_before"`
	BytesFreed      int64 `json:"bytes_freed"`
	BytesRepacked   int64 `json:"bytes_repacked"` // live bytes copied into new packs
	IndexesReplaced int   `json:"indexes_replaced"`
	// MissingPacks are packs the index names but storage lacks; their
	// entries are dropped from the new index (repo check reports them).
	MissingPacks []string `json:"missing_packs"`
}

// Prune removes blobs no snapshot and no WAL catalogue entry references.
// The caller deletes snapshots and WAL entries first (retention decides
// which) and holds an exclusive lock, so no backup runs meanwhile;
// concurrent writers (LockConcurrent) may keep writing: packs younger than
// the grace period are never touched, and such writers reuse only their
// own blobs younger than their reuse window.
//
// Order, so that a kill -9 at any moment leaves a repository that check
// passes: new packs, then one new index that supersedes every index object
// read at the start, then the old index objects are removed, and only then
// the packs they named.
func (r *Repository) Prune(ctx context.Context, opts PruneOptions) (*PruneResult, error) {
	if opts.Grace <= 0 {
		opts.Grace = DefaultPruneGrace
	}
	if opts.RepackUnused <= 0 {
		opts.RepackUnused = 0.2
	}
	if opts.SmallPack <= 0 {
		opts.SmallPack = 4 << 20
	}
	phase := func(p string) {
		if opts.Progress != nil {
			opts.Progress(p)
		}
	}
	res := &PruneResult{DryRun: opts.DryRun, MissingPacks: []string{}}
	start := r.Now()

	// 1. The index as stored now, and every pack.
	phase("reading index")
	idx, indexNames, err := r.freshIndex(ctx)
	if err != nil {
		return nil, err
	}
	type packFile struct {
		size    int64
		modTime time.Time
	}
	listed := map[chunk.ID]packFile{}
	if err := r.be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		if id, err := chunk.ParseID(fi.Name); err == nil {
			listed[id] = packFile{fi.Size, fi.ModTime}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	res.Packs = len(listed)
	for _, p := range listed {
		res.BytesBefore += p.size
	}
	old := func(id chunk.ID) bool {
		p := listed[id]
		return !p.modTime.IsZero() && start.Sub(p.modTime) >= opts.Grace
	}

	// 2. Everything still referenced.
	phase("finding referenced blobs")
	refs, n, err := r.referenced(ctx, idx.Count(), opts)
	if err != nil {
		return nil, err
	}
	res.BlobsReferenced = n

	// 3. Decide per pack. A referenced blob is live in one pack only: the
	// one the index answers for it; other copies are garbage.
	phase("planning")
	type packUse struct {
		info       index.PackInfo
		live, dead []index.Entry
		liveBytes  int64
	}
	uses := map[chunk.ID]*packUse{}
	for id, p := range idx.Packs() {
		uses[id] = &packUse{info: p}
	}
	idx.Each(func(e index.Entry) {
		u := uses[e.Pack]
		if u == nil {
			return
		}
		canonical, _ := idx.Lookup(e.ID)
		if refs.has(e.ID) && canonical.Pack == e.Pack && canonical.Offset == e.Offset {
			u.live = append(u.live, e)
			u.liveBytes += int64(e.Length)
		} else {
			u.dead = append(u.dead, e)
		}
	})
	var deletePacks, repackPacks []chunk.ID
	for id, u := range uses {
		f, exists := listed[id]
		if !exists {
			res.MissingPacks = append(res.MissingPacks, id.String())
			continue
		}
		if !old(id) {
			res.PacksYoung++
			continue
		}
		switch {
		case len(u.live) == 0:
			deletePacks = append(deletePacks, id)
			res.BytesFreed += f.size
			res.BlobsRemoved += len(u.dead)
		case len(u.dead) > 0 && float64(f.size-u.liveBytes) >= opts.RepackUnused*float64(f.size),
			f.size < opts.SmallPack:
			repackPacks = append(repackPacks, id)
			res.BytesRepacked += u.liveBytes
			res.BlobsRemoved += len(u.dead)
			res.BytesFreed += f.size - u.liveBytes
		}
	}
	var unindexed []chunk.ID
	for id := range listed {
		if _, ok := uses[id]; !ok && old(id) {
			unindexed = append(unindexed, id)
			res.BytesFreed += listed[id].size
		}
	}
	res.PacksDeleted, res.PacksRepacked, res.PacksUnindexed = len(deletePacks), len(repackPacks), len(unindexed)
	slices.Sort(res.MissingPacks)
	if len(res.MissingPacks) > 0 && !opts.DryRun {
		return res, fmt.Errorf("prune: %d packs the index names are missing (first %s): run `pgvault repo check` and repair before pruning",
			len(res.MissingPacks), res.MissingPacks[0][:8])
	}
	if opts.DryRun || len(deletePacks)+len(repackPacks)+len(unindexed) == 0 && len(indexNames) <= 1 {
		// Nothing to change (or a dry run). Repacking tiny packs frees
		// less than their size: count freed bytes after writing.
		return res, nil
	}

	// 4. Repack: copy live blobs, still sealed, into new packs.
	phase("repacking")
	var newEntries []index.Entry
	var newPacks []index.PackInfo
	writers := map[pack.BlobType]*pack.Writer{}
	flushPack := func(t pack.BlobType) error {
		w := writers[t]
		if w == nil || w.Count() == 0 {
			return nil
		}
		delete(writers, t)
		data, id, blobs := w.Finish(r.codec)
		if err := r.be.Save(ctx, backend.Handle{Type: backend.PackFile, Name: id.String()}, data); err != nil {
			return fmt.Errorf("prune: upload repacked pack: %w", err)
		}
		newPacks = append(newPacks, index.PackInfo{ID: id, Size: uint32(len(data)), Type: t})
		for _, b := range blobs {
			newEntries = append(newEntries, index.Entry{ID: b.ID, Pack: id, Type: b.Type, Offset: b.Offset, Length: b.Length, PlainLen: b.PlainLen})
		}
		res.NewPacks++
		return nil
	}
	for _, pid := range repackPacks {
		u := uses[pid]
		var data []byte
		// Authenticate before copying: prune must not spread damage.
		err := readAuthentic(ctx, r.log, "pack "+pid.Short(), func(ctx context.Context) (err error) {
			data, err = r.be.Load(ctx, backend.Handle{Type: backend.PackFile, Name: pid.String()}, 0, 0)
			if err != nil {
				return fmt.Errorf("prune: read pack %s: %w", pid.Short(), err)
			}
			for _, e := range u.live {
				if int(e.Offset)+int(e.Length) > len(data) {
					return fmt.Errorf("prune: pack %s is shorter than its index says; run `pgvault repo check`", pid.Short())
				}
				if _, err := r.openBlob(nil, e.Type, e.ID, data[e.Offset:e.Offset+e.Length]); err != nil {
					return fmt.Errorf("prune: pack %s: %w; run `pgvault repo check --read-data`", pid.Short(), err)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		for _, e := range u.live {
			sealed := data[e.Offset : e.Offset+e.Length]
			w := writers[e.Type]
			if w == nil {
				w = pack.NewWriter(r.opts.PackSize + r.opts.PackSize/8)
				writers[e.Type] = w
			}
			w.Add(e.Type, e.ID, sealed, int(e.PlainLen))
			if w.Size() >= r.opts.PackSize {
				if err := flushPack(e.Type); err != nil {
					return nil, err
				}
			}
		}
	}
	for t := range writers {
		if err := flushPack(t); err != nil {
			return nil, err
		}
	}

	// 5. One index for everything that stays, superseding what we read.
	phase("writing index")
	gone := map[chunk.ID]bool{}
	for _, id := range deletePacks {
		gone[id] = true
	}
	for _, id := range repackPacks {
		gone[id] = true
	}
	var keepPacks []index.PackInfo
	for id, u := range uses {
		if !gone[id] && listed[id] != (packFile{}) {
			keepPacks = append(keepPacks, u.info)
			newEntries = append(newEntries, u.live...)
			if !old(id) {
				// Young packs keep every entry: garbage in them is only
				// garbage until a writer reuses it.
				newEntries = append(newEntries, u.dead...)
			}
		}
	}
	keepPacks = append(keepPacks, newPacks...)
	slices.SortFunc(keepPacks, func(a, b index.PackInfo) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	supersedes := make([]chunk.ID, 0, len(indexNames))
	for _, name := range indexNames {
		if id, err := chunk.ParseID(name); err == nil {
			supersedes = append(supersedes, id)
		}
	}
	plain, err := index.Encode(supersedes, keepPacks, newEntries)
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	sealed := r.codec.SealMeta(nil, indexLabel, plain)
	newIndex := chunk.ID(sha256.Sum256(sealed))
	if err := r.be.Save(ctx, backend.Handle{Type: backend.IndexFile, Name: newIndex.String()}, sealed); err != nil {
		return nil, fmt.Errorf("prune: save index: %w", err)
	}

	// 6. Old index objects, then the packs only they named.
	phase("deleting")
	for _, name := range indexNames {
		if name == newIndex.String() {
			continue
		}
		if err := r.be.Remove(ctx, backend.Handle{Type: backend.IndexFile, Name: name}); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return nil, fmt.Errorf("prune: remove index %s: %w", short(name), err)
		}
		res.IndexesReplaced++
	}
	for _, id := range append(append(deletePacks, repackPacks...), unindexed...) {
		if err := r.be.Remove(ctx, backend.Handle{Type: backend.PackFile, Name: id.String()}); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return nil, fmt.Errorf("prune: remove pack %s: %w", id.Short(), err)
		}
	}
	// Our own view: start over from what is stored now.
	r.idx.close()
	r.idx = newMasterIndex(r.be, r.codec, r.idx.cacheDir, r.log)
	if err := r.idx.load(ctx); err != nil {
		return res, err
	}
	return res, nil
}

// freshIndex reads every index object from storage (not the local cache)
// and returns them as one heap-resident index plus the object names.
func (r *Repository) freshIndex(ctx context.Context) (*masterIndex, []string, error) {
	var names []string
	if err := r.be.List(ctx, backend.IndexFile, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("list index: %w", err)
	}
	m := newMasterIndex(r.be, r.codec, "", r.log)
	var kept []string
	for _, name := range names {
		id, err := chunk.ParseID(name)
		if err != nil {
			continue
		}
		tab, _, err := m.loadOne(ctx, id, nil)
		if errors.Is(err, backend.ErrNotFound) {
			continue // replaced while we listed
		}
		if err != nil {
			return nil, nil, fmt.Errorf("prune: %w; run `pgvault repo rebuild-index` first", err)
		}
		m.tables = append(m.tables, &table{t: tab, covers: []chunk.ID{id}})
		m.loaded[id] = true
		kept = append(kept, name)
	}
	return m, kept, nil
}

// referenced marks every blob a snapshot or a WAL catalogue entry needs.
// It fails rather than guess when a snapshot cannot be read completely:
// a blob it cannot see might be one that must stay.
func (r *Repository) referenced(ctx context.Context, hint int, opts PruneOptions) (*idSet, int, error) {
	set := newIDSet(hint)
	count := 0
	mark := func(id chunk.ID) {
		if !set.has(id) {
			count++
		}
		set.add(id)
	}
	snaps, err := r.Snapshots(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("prune: %w", err)
	}
	seenTrees := map[chunk.ID]bool{}
	seenContent := map[chunk.ID]bool{}
	var walkTree func(id chunk.ID) error
	walkTree = func(id chunk.ID) error {
		if seenTrees[id] {
			return nil
		}
		seenTrees[id] = true
		mark(id)
		t, err := r.LoadTree(ctx, id)
		if err != nil {
			return err
		}
		for i := range t.Nodes {
			n := &t.Nodes[i]
			switch n.Type {
			case NodeDir:
				if err := walkTree(*n.Subtree); err != nil {
					return err
				}
			case NodeFile:
				for _, c := range n.Chunks {
					mark(c.ID)
				}
				if n.Content != nil && !seenContent[*n.Content] {
					seenContent[*n.Content] = true
					mark(*n.Content)
					refs, err := r.ChunkList(ctx, n)
					if err != nil {
						return err
					}
					for _, c := range refs {
						mark(c.ID)
					}
				}
			}
		}
		return nil
	}
	for _, s := range snaps {
		if opts.IgnoreSnapshot != nil && opts.IgnoreSnapshot(s.ID) {
			continue
		}
		if err := walkTree(s.Root); err != nil {
			return nil, 0, fmt.Errorf("prune: snapshot %s cannot be read completely (%w); fix it (repo check) or delete it before pruning", s.ShortID(), err)
		}
		for _, id := range s.Attachments {
			mark(id)
		}
	}
	entries, err := r.ListWAL(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("prune: %w", err)
	}
	for _, e := range entries {
		if opts.IgnoreWAL != nil && opts.IgnoreWAL(e.Timeline, e.Name) {
			continue
		}
		wf, err := r.LoadWALFile(ctx, e.Timeline, e.Name)
		if errors.Is(err, ErrWALNotFound) {
			continue // replaced partial
		}
		if err != nil {
			return nil, 0, fmt.Errorf("prune: %w", err)
		}
		for _, c := range wf.Chunks {
			mark(c.ID)
		}
	}
	return set, count, nil
}

package overlay

import (
	"cmp"
	"context"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/pgvault/pgvault/chunk"
)

// Catalog warm-up. A server started on an instant mount reads the
// shared catalogs (global/) as it starts, and the first connection to a
// database reads that database's system catalogs to build its relation
// cache (the backup leaves out pg_internal.init, so they are read from
// the catalogs themselves). Read on demand, each first read of a file is
// a round trip to the repository, one after the other: on an object
// store dozens of requests in a row before the first query answers. The
// mount therefore loads them into the blob cache in the background once
// recovery starts (Overlay.Recovering), while the server replays WAL.

// firstNormalObjectID is PostgreSQL's FirstNormalObjectId: relations
// numbered below it are the system catalogs initdb created. (A catalog
// rewritten by VACUUM FULL gets a number above it and is simply read on
// demand.)
const firstNormalObjectID = 16384

// warmParallel is how many chunk loads the warm-up runs at once.
const warmParallel = 2

// idlePriority puts the calling thread at the lowest CPU priority (nice
// 19) and in the idle I/O class.
func idlePriority() {
	tid := unix.Gettid()
	unix.Setpriority(unix.PRIO_PROCESS, tid, 19)
	const ioprioClassIdle, ioprioClassShift, ioprioWhoProcess = 3, 13, 1
	unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), ioprioClassIdle<<ioprioClassShift)
}

// WarmResult says what WarmCatalogs loaded.
type WarmResult struct {
	Files    int           `json:"files"`
	Folders  int           `json:"folders,omitempty"` // listings loaded (WarmStartup)
	Bytes    int64         `json:"bytes"`             // plaintext bytes of the chunks loaded
	Requests int           `json:"requests"`          // range reads from the repository
	Duration time.Duration `json:"duration"`
}

// WarmCatalogs loads into the repository's blob cache the snapshot
// content of the files the first connections read: global/ and, database
// by database, the main fork of every system catalog (a name that is a
// number below firstNormalObjectID) and pg_filenode.map. It leaves out
// the template databases (template1 is 1; from PostgreSQL 15 template0 is
// 4, and it takes no connections). It chooses files in that order, the
// smaller ones of a folder first, until budget bytes (so it never evicts
// more than that from the cache), skips files whose content no longer
// comes from the snapshot, stops when ctx ends, and leaves failures to
// the reads that need the content.
func (ov *Overlay) WarmCatalogs(ctx context.Context, budget int64) WarmResult {
	start := time.Now()
	res := WarmResult{}
	var want []chunk.ID
	seen := map[chunk.ID]bool{}
	add := func(d *Node) bool {
		for _, f := range ov.catalogFiles(ctx, d) {
			bf, err := ov.baseFile(ctx, f)
			if err != nil {
				continue
			}
			res.Files++
			for _, c := range bf.Chunks() {
				if seen[c.ID] {
					continue // templates share most of their catalogs
				}
				if res.Bytes+int64(c.Size) > budget {
					return false
				}
				seen[c.ID] = true
				res.Bytes += int64(c.Size)
				want = append(want, c.ID)
			}
		}
		return true
	}
	if g, err := ov.Lookup(ctx, ov.root, "global"); err == nil && add(g) {
		for _, d := range ov.databaseDirs(ctx) {
			if !add(d) {
				break
			}
		}
	}
	res.Requests = ov.preload(ctx, want)
	res.Duration = time.Since(start)
	return res
}

// preload loads the chunks ids into the blob cache and returns the
// requests it made. In pack order, and with chunks that lie close together
// in a pack read as one range: the files of a folder were stored
// together, so the loads become a few sequential requests through each
// pack instead of hundreds of small random reads, each a round trip on an
// object store and a seek competing with PostgreSQL's start on a disk.
// Failures are left to the reads that need the content.
func (ov *Overlay) preload(ctx context.Context, ids []chunk.ID) int {
	runs := ov.r.PlanPreload(ids)
	var g errgroup.Group
	g.SetLimit(warmParallel)
	for _, run := range runs {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			// Each load runs on a thread of its own at idle CPU and I/O
			// priority: PostgreSQL is starting meanwhile, on a cold cache,
			// and must not wait for the warm-up. The thread ends with its
			// goroutine (it is never unlocked), so its priority cannot leak
			// to other work.
			runtime.LockOSThread()
			idlePriority()
			ov.r.PreloadRun(ctx, run)
			return nil
		})
	}
	g.Wait() // no errors: failures are left to the reads
	return len(runs)
}

// databaseDirs returns the folders of base/ named by the OID of a
// database other than the templates, in OID order.
func (ov *Overlay) databaseDirs(ctx context.Context) []*Node {
	base, err := ov.Lookup(ctx, ov.root, "base")
	if err != nil {
		return nil
	}
	ents, err := ov.List(ctx, base)
	if err != nil {
		return nil
	}
	type db struct {
		oid uint64
		n   *Node
	}
	var dbs []db
	for _, e := range ents {
		oid, err := strconv.ParseUint(e.Name, 10, 32)
		if err != nil || e.Kind != KindDir || oid == 1 || oid == 4 {
			continue // not a database's folder, or a template's
		}
		if n, err := ov.Lookup(ctx, base, e.Name); err == nil {
			dbs = append(dbs, db{oid, n})
		}
	}
	slices.SortFunc(dbs, func(a, b db) int { return cmp.Compare(a.oid, b.oid) })
	out := make([]*Node, len(dbs))
	for i, d := range dbs {
		out[i] = d.n
	}
	return out
}

// catalogFiles returns the files of folder d a cache build reads whose
// content still comes from the snapshot, smallest first.
func (ov *Overlay) catalogFiles(ctx context.Context, d *Node) []*Node {
	ents, err := ov.List(ctx, d)
	if err != nil {
		return nil
	}
	var out []*Node
	for _, e := range ents {
		if e.Kind != KindFile {
			continue
		}
		if e.Name != "pg_filenode.map" {
			oid, err := strconv.ParseUint(e.Name, 10, 32)
			if err != nil || oid >= firstNormalObjectID {
				continue
			}
		}
		n, err := ov.Lookup(ctx, d, e.Name)
		if err == nil && ov.readsFromSnapshot(n) {
			out = append(out, n)
		}
	}
	slices.SortStableFunc(out, func(a, b *Node) int { return cmp.Compare(a.base.Size, b.base.Size) })
	return out
}

// readsFromSnapshot reports whether reads of file node n would still fetch
// content from the snapshot.
func (ov *Overlay) readsFromSnapshot(n *Node) bool {
	if n.kind != KindFile || n.base == nil {
		return false
	}
	f := n.file
	f.mu.RLock()
	defer f.mu.RUnlock()
	return !f.local && f.baseLimit > 0 && !f.present.allBelow(ceilDiv(f.baseLimit, ov.bs))
}

// startupFileMax is the largest file WarmStartup loads: the control files
// a server reads as it starts are small (a commit log segment is 256 KiB).
const startupFileMax = 1 << 20

// dataFolders hold the relations and the WAL: WarmStartup lists them but
// loads none of their files.
var dataFolders = map[string]bool{"base": true, "pg_tblspc": true, "pg_wal": true}

// warmListings is how many folder listings WarmStartup loads at once.
const warmListings = 8

// WarmStartup loads, while a server starts on the mount, what its start
// reads before redo begins: the listing of every folder (the startup
// process scans every database's folder for the init forks of unlogged
// relations, and creates what is missing of pg_wal, pg_logical and the
// rest) and the content of the small files outside base/, pg_tblspc/ and
// pg_wal/ (pg_control, the current segments of pg_xact/ and
// pg_multixact/, pg_logical/ state), up to budget bytes. Read on demand,
// each is a round trip to the repository, one after another. Listings are
// loaded a level of the tree at a time, in parallel, so they cost as many
// round trips as the tree is deep. Like WarmCatalogs it stops when ctx
// ends and leaves failures to the reads that need the content.
func (ov *Overlay) WarmStartup(ctx context.Context, budget int64) WarmResult {
	start := time.Now()
	res := WarmResult{}
	type folder struct {
		n    *Node
		data bool // in a data folder
	}
	var (
		mu    sync.Mutex
		files []*Node
	)
	level := []folder{{n: ov.root}}
	for len(level) > 0 && ctx.Err() == nil {
		var next []folder
		var g errgroup.Group
		g.SetLimit(warmListings)
		for _, d := range level {
			g.Go(func() error {
				ents, err := ov.List(ctx, d.n)
				if err != nil {
					return nil // left to the reads that need it
				}
				for _, e := range ents {
					c, err := ov.Lookup(ctx, d.n, e.Name)
					if err != nil {
						continue
					}
					data := d.data || (d.n == ov.root && dataFolders[e.Name])
					mu.Lock()
					switch {
					case c.kind == KindDir:
						next = append(next, folder{c, data})
					case !data && c.base != nil && c.base.Size <= startupFileMax && ov.readsFromSnapshot(c):
						files = append(files, c)
					}
					mu.Unlock()
				}
				return nil
			})
		}
		g.Wait()
		res.Folders += len(level)
		level = next
	}
	slices.SortFunc(files, func(a, b *Node) int { return cmp.Compare(a.base.Size, b.base.Size) })
	var want []chunk.ID
	seen := map[chunk.ID]bool{}
	for _, f := range files {
		bf, err := ov.baseFile(ctx, f)
		if err != nil {
			continue
		}
		if res.Bytes+bf.Size() > budget {
			break
		}
		res.Files++
		for _, c := range bf.Chunks() {
			if !seen[c.ID] {
				seen[c.ID] = true
				res.Bytes += int64(c.Size)
				want = append(want, c.ID)
			}
		}
	}
	res.Requests = ov.preload(ctx, want)
	res.Duration = time.Since(start)
	return res
}

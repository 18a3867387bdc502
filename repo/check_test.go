package repo

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/mem"
	"github.com/pgvault/pgvault/repo/index"
	"github.com/pgvault/pgvault/repo/pack"
)

func listNames(t *testing.T, be backend.Backend, ft backend.FileType) []string {
	t.Helper()
	var out []string
	if err := be.List(ctx, ft, func(fi backend.FileInfo) error { out = append(out, fi.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func mustCheck(t *testing.T, r *Repository, readData bool) *CheckResult {
	t.Helper()
	res, err := r.Check(ctx, CheckOptions{ReadData: readData})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func hasProblem(ps []Problem, object, msg string) bool {
	return slices.ContainsFunc(ps, func(p Problem) bool {
		return strings.Contains(p.Object, object) && strings.Contains(p.Message, msg)
	})
}

func TestCheckCleanRepository(t *testing.T) {
	r, _ := newTestRepo(t)
	writeSnapshot(t, r, sampleFiles())
	if _, err := r.SaveWAL(ctx, 1, "000000010000000000000001", randBytes(1, 1<<20), false); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lastDone, lastTotal int
	res, err := r.Check(ctx, CheckOptions{ReadData: true, Progress: func(done, total int, _ int64) {
		mu.Lock()
		defer mu.Unlock()
		lastDone, lastTotal = max(lastDone, done), total
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Errors) > 0 || len(res.Warnings) > 0 {
		t.Fatalf("clean repository: errors %v warnings %v", res.Errors, res.Warnings)
	}
	if res.Snapshots != 1 || res.WALFiles != 1 || res.PacksRead != res.Packs || res.Packs < 2 {
		t.Fatalf("counts: %+v", res)
	}
	if lastDone != res.PacksRead || lastTotal != res.Packs {
		t.Fatalf("progress ended at %d of %d, want %d of %d", lastDone, lastTotal, res.PacksRead, res.Packs)
	}
}

// dataPack returns a pack holding data blobs and a blob in it.
func dataPack(t *testing.T, r *Repository) (packID, blobID chunk.ID) {
	t.Helper()
	var found bool
	r.idx.Each(func(e index.Entry) {
		if !found && e.Type == pack.DataBlob {
			packID, blobID, found = e.Pack, e.ID, true
		}
	})
	if !found {
		t.Fatal("no data blob")
	}
	return packID, blobID
}

func TestCheckFindsFlippedBit(t *testing.T) {
	r, be := newTestRepo(t)
	writeSnapshot(t, r, sampleFiles())
	packID, blobID := dataPack(t, r)
	e, _ := r.idx.Lookup(blobID)
	be.Corrupt(backend.Handle{Type: backend.PackFile, Name: packID.String()}, int(e.Offset)+int(e.Length)/2)

	if res := mustCheck(t, r, false); len(res.Errors) != 0 {
		t.Fatalf("structure check read data: %v", res.Errors)
	}
	res := mustCheck(t, r, true)
	if !hasProblem(res.Errors, "pack "+packID.String(), "blob "+blobID.Short()) {
		t.Fatalf("read-data did not name pack %s and blob %s: %v", packID.Short(), blobID.Short(), res.Errors)
	}
	// Reading the blob fails with an error naming it, never with wrong bytes.
	r.cache = newBlobCache(1 << 20)
	if _, err := r.LoadBlob(ctx, blobID); err == nil || !strings.Contains(err.Error(), blobID.Short()) {
		t.Fatalf("LoadBlob of a damaged blob: %v", err)
	}
}

func TestCheckFindsMissingPack(t *testing.T) {
	r, be := newTestRepo(t)
	writeSnapshot(t, r, sampleFiles())
	packID, _ := dataPack(t, r)
	be.Remove(ctx, backend.Handle{Type: backend.PackFile, Name: packID.String()})
	res := mustCheck(t, r, false)
	if !hasProblem(res.Errors, "pack "+packID.String(), "missing") {
		t.Fatalf("missing pack not named: %v", res.Errors)
	}
}

func TestCheckFindsTruncatedIndex(t *testing.T) {
	r, be := newTestRepo(t)
	writeSnapshot(t, r, sampleFiles())
	name := listNames(t, be, backend.IndexFile)[0]
	h := backend.Handle{Type: backend.IndexFile, Name: name}
	data, _ := be.Load(ctx, h, 0, 0)
	be.Save(ctx, h, data[:len(data)/2])
	res := mustCheck(t, r, false)
	if !hasProblem(res.Errors, "index "+name, "") {
		t.Fatalf("truncated index not named: %v", res.Errors)
	}
	// Opening the repository anew also names it.
	if _, err := Open(ctx, be, []byte(testPassword), Options{}); err == nil || !strings.Contains(err.Error(), name[:8]) {
		t.Fatalf("open with a truncated index: %v", err)
	}
	// Rebuilding the index from the packs repairs it.
	if _, err := r.RebuildIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if res := mustCheck(t, r, true); len(res.Errors) != 0 {
		t.Fatalf("after rebuild: %v", res.Errors)
	}
}

func TestUnindexedPackIsOnlyAWarning(t *testing.T) {
	r, be := newTestRepo(t)
	writeSnapshot(t, r, sampleFiles())
	// A writer that died after uploading a pack but before its index.
	w := r.NewSnapshotWriter(ctx)
	w.AddFile("base/new", NodeMeta{}, strings.NewReader(strings.Repeat("x", 300000)), SplitFixed)
	w.drain()
	r.saver.mu.Lock()
	open := r.saver.packers
	r.saver.mu.Unlock()
	for _, pw := range open {
		data, id, _ := pw.Finish(r.codec)
		be.Save(ctx, backend.Handle{Type: backend.PackFile, Name: id.String()}, data)
	}
	r2, err := Open(ctx, be, []byte(testPassword), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	res := mustCheck(t, r2, true)
	if len(res.Errors) != 0 {
		t.Fatalf("errors: %v", res.Errors)
	}
	if !hasProblem(res.Warnings, "pack", "not in any index") {
		t.Fatalf("no warning for the unindexed pack: %v", res.Warnings)
	}
	// Rebuilding the index adopts the orphan.
	if _, err := r2.RebuildIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if res := mustCheck(t, r2, true); len(res.Errors)+len(res.Warnings) != 0 {
		t.Fatalf("after rebuild: %v %v", res.Errors, res.Warnings)
	}
}

func TestRebuildIndexFromPacksAlone(t *testing.T) {
	r, be := newTestRepo(t)
	files := sampleFiles()
	s := writeSnapshot(t, r, files)
	for _, name := range listNames(t, be, backend.IndexFile) {
		be.Remove(ctx, backend.Handle{Type: backend.IndexFile, Name: name})
	}
	r2, err := Open(ctx, be, []byte(testPassword), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if res := mustCheck(t, r2, false); len(res.Errors) == 0 {
		t.Fatal("check passed with no index at all")
	}
	res, err := r2.RebuildIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Packs == 0 || res.Blobs == 0 || len(res.DamagedPacks) != 0 {
		t.Fatalf("rebuild: %+v", res)
	}
	if got := readAll(t, r2, s, "base/1/16384"); string(got) != string(files["base/1/16384"]) {
		t.Fatal("content differs after rebuild")
	}
	if res := mustCheck(t, r2, true); len(res.Errors) != 0 {
		t.Fatalf("after rebuild: %v", res.Errors)
	}
}

// failingPackLoads fails the whole-pack read of one pack with a permanent
// error and counts the whole-pack reads that start after that failure.
// Such a read waits for its context to end, so each worker starts at
// most one before the failure cancels the pass; a pool that does not
// cancel starts more, and once more than allowed have started they all
// go on (the test has failed by then).
type failingPackLoads struct {
	backend.Backend
	allowed int

	target  atomic.Pointer[string]
	failed  atomic.Bool
	after   atomic.Int64
	release chan struct{}
	once    sync.Once
}

func (f *failingPackLoads) Load(ctx context.Context, h backend.Handle, offset, length int64) ([]byte, error) {
	if h.Type == backend.PackFile && offset == 0 && length == 0 {
		if t := f.target.Load(); t != nil && *t == h.Name {
			f.failed.Store(true)
			return nil, backend.Permanent(errors.New("injected permanent failure"))
		}
		if f.failed.Load() {
			if f.after.Add(1) > int64(f.allowed) {
				f.once.Do(func() { close(f.release) })
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-f.release:
			}
		}
	}
	return f.Backend.Load(ctx, h, offset, length)
}

// A fatal error reading one pack ends the read-data pass: the packs not
// started yet are not read (each would cost the full retry budget against
// a backend that is failing).
func TestCheckReadDataStopsAtFatalError(t *testing.T) {
	const parallel = 2
	// The reads already under way when the failure comes may finish: one
	// per other worker.
	be := &failingPackLoads{Backend: mem.New(), allowed: parallel - 1, release: make(chan struct{})}
	r := newTestRepoOn(t, be, Options{PackSize: 256 << 10})
	for i := range 30 {
		// Each blob fills a pack of its own.
		if _, _, err := r.SaveBlob(ctx, pack.DataBlob, randBytes(uint64(100+i), 260<<10)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	packs := listNames(t, be.Backend, backend.PackFile)
	if len(packs) < 30 {
		t.Fatalf("%d packs, want at least 30", len(packs))
	}
	slices.Sort(packs)
	be.target.Store(&packs[0]) // read first: packs are read in name order

	_, err := r.Check(ctx, CheckOptions{ReadData: true, Parallel: parallel})
	if err == nil || !strings.Contains(err.Error(), "injected permanent failure") {
		t.Fatalf("check: err = %v, want the injected failure", err)
	}
	if n := be.after.Load(); n > int64(be.allowed) {
		t.Errorf("%d pack reads started after the fatal error (of %d packs), want at most %d", n, len(packs), be.allowed)
	}
}

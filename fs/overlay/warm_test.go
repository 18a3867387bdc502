package overlay

import (
	"context"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/fs/fstest"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/repotest"
)

// catalogTree is a data directory with shared catalogs, the template
// databases, postgres (5) and a user database, each with catalogs and a
// user relation. Every file has its own content, so each is one chunk of
// its own.
func catalogTree() *fstest.Tree {
	files := map[string][]byte{}
	for i, p := range []string{
		"PG_VERSION", "global/pg_control", "global/pg_filenode.map", "global/1262", "global/2671",
		"base/1/1259", "base/4/1259", "base/5/pg_filenode.map", "base/5/1259", "base/5/2662", "base/5/16384", "base/5/1259_fsm",
		"base/16390/1247", "base/16390/16400",
	} {
		files[p] = fstest.RandBytes(int64(100+i), 8192*(1+i%3))
	}
	return &fstest.Tree{Files: files, Dirs: []string{"", "global", "base", "base/1", "base/4", "base/5", "base/16390"}}
}

// coldOverlay stores tree and opens its overlay through a second
// repository handle whose blob cache is empty, as on a new machine.
func coldOverlay(t *testing.T, tree *fstest.Tree) (*Overlay, *repo.Repository) {
	t.Helper()
	ctx := context.Background()
	_, s, be := fstest.Store(t, tree)
	r, err := repo.Open(ctx, be, []byte(repotest.Password), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	snap, err := r.LoadSnapshot(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	ov := openTestOverlay(t, r, snap, t.TempDir())
	t.Cleanup(func() { ov.Close(ctx) })
	return ov, r
}

// cached reports whether every chunk of the snapshot file at p is in the
// blob cache.
func cached(t *testing.T, ov *Overlay, r *repo.Repository, p string) bool {
	t.Helper()
	bf, err := ov.baseFile(context.Background(), mustNode(t, ov, p))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range bf.Chunks() {
		if _, ok := r.CachedBlob(c.ID); !ok {
			return false
		}
	}
	return true
}

func TestWarmCatalogsLoadsCatalogsOnly(t *testing.T) {
	ov, r := coldOverlay(t, catalogTree())
	// A catalog the overlay already holds whole is not loaded again.
	if err := ov.WriteFile(context.Background(), "base/5/2662", fstest.RandBytes(7, 8192), 0o600, Owner{}); err != nil {
		t.Fatal(err)
	}
	res := ov.WarmCatalogs(context.Background(), 1<<30)
	want := map[string]bool{
		"global/pg_filenode.map": true, "global/1262": true, "global/2671": true,
		"base/5/pg_filenode.map": true, "base/5/1259": true, "base/16390/1247": true,
		// Not: user relations, other forks, pg_control, the templates.
		"PG_VERSION": false, "global/pg_control": false, "base/5/16384": false, "base/5/1259_fsm": false,
		"base/16390/16400": false, "base/1/1259": false, "base/4/1259": false,
	}
	for p, w := range want {
		if got := cached(t, ov, r, p); got != w {
			t.Errorf("%s: cached %v, want %v", p, got, w)
		}
	}
	if res.Files != 6 {
		t.Errorf("warmed %d files, want 6", res.Files)
	}
}

// TestWarmCatalogsBudget: the shared catalogs come first, and nothing
// past the budget is loaded.
func TestWarmCatalogsBudget(t *testing.T) {
	tree := catalogTree()
	ov, r := coldOverlay(t, tree)
	budget := int64(len(tree.Files["global/pg_filenode.map"]) + len(tree.Files["global/1262"]) + len(tree.Files["global/2671"]))
	res := ov.WarmCatalogs(context.Background(), budget)
	if res.Bytes != budget {
		t.Errorf("loaded %d bytes, want %d", res.Bytes, budget)
	}
	for p, w := range map[string]bool{"global/1262": true, "global/2671": true, "base/5/1259": false, "base/16390/1247": false} {
		if got := cached(t, ov, r, p); got != w {
			t.Errorf("budget %d: %s cached %v, want %v", budget, p, got, w)
		}
	}
}

// TestWarmCatalogsStopsWithContext: a cancelled warm-up loads nothing.
func TestWarmCatalogsStopsWithContext(t *testing.T) {
	ov, r := coldOverlay(t, catalogTree())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ov.WarmCatalogs(ctx, 1<<30)
	if cached(t, ov, r, "global/1262") {
		t.Error("a cancelled warm-up loaded global/1262")
	}
}

// TestRecoveringClosesOnMark: the WAL view's first request, which marks
// recovery as started, closes the channel the catalog warm-up waits on.
func TestRecoveringClosesOnMark(t *testing.T) {
	ov, _ := coldOverlay(t, catalogTree())
	select {
	case <-ov.Recovering():
		t.Fatal("recovering before any WAL request")
	default:
	}
	ov.MarkRecovering()
	ov.MarkRecovering() // every request calls it
	select {
	case <-ov.Recovering():
	default:
		t.Fatal("MarkRecovering did not mark recovery as started")
	}
}

// TestWarmStartupLoadsListingsAndControlFiles: every folder is listed and
// the small files outside the data folders are loaded; no relation, no
// WAL, nothing larger than startupFileMax, nothing past the budget.
func TestWarmStartupLoadsListingsAndControlFiles(t *testing.T) {
	tree := catalogTree()
	tree.Dirs = append(tree.Dirs, "pg_xact", "pg_multixact", "pg_multixact/offsets", "pg_wal", "pg_tblspc", "pg_logical")
	tree.Files["pg_xact/0000"] = fstest.RandBytes(200, 8192)
	tree.Files["pg_multixact/offsets/0000"] = fstest.RandBytes(201, 8192)
	tree.Files["pg_logical/replorigin_checkpoint"] = fstest.RandBytes(202, 8)
	tree.Files["pg_wal/000000010000000000000002"] = fstest.RandBytes(203, 16384)
	tree.Files["pg_xact/big"] = fstest.RandBytes(204, startupFileMax+1)
	ov, r := coldOverlay(t, tree)
	res := ov.WarmStartup(context.Background(), 1<<30)
	if res.Folders != len(tree.Dirs) {
		t.Errorf("listed %d folders, want %d", res.Folders, len(tree.Dirs))
	}
	ov.mu.Lock()
	for _, n := range ov.nodes {
		if n.kind == KindDir && n.children == nil {
			t.Errorf("folder %s not listed", n.basePath)
		}
	}
	ov.mu.Unlock()
	for p, w := range map[string]bool{
		"PG_VERSION": true, "global/pg_control": true, "global/1262": true, "pg_xact/0000": true,
		"pg_multixact/offsets/0000": true, "pg_logical/replorigin_checkpoint": true,
		"base/5/1259": false, "base/16390/16400": false, "pg_wal/000000010000000000000002": false, "pg_xact/big": false,
	} {
		if got := cached(t, ov, r, p); got != w {
			t.Errorf("%s: cached %v, want %v", p, got, w)
		}
	}

	// The budget holds: smaller files first, nothing past it.
	ov2, r2 := coldOverlay(t, tree)
	res = ov2.WarmStartup(context.Background(), 10)
	if res.Bytes > 10 || !cached(t, ov2, r2, "pg_logical/replorigin_checkpoint") || cached(t, ov2, r2, "pg_xact/0000") {
		t.Errorf("budget 10 bytes: loaded %d bytes (%+v)", res.Bytes, res)
	}
}

// TestWarmStartupAlongsidePrepare: the mount starts the warm-up as the
// overlay opens and prepares the view meanwhile; both touch the same
// folders (run with -race in make test).
func TestWarmStartupAlongsidePrepare(t *testing.T) {
	tree := startableTree(t)
	ov, _ := coldOverlay(t, tree)
	ctx := context.Background()
	warmed := make(chan WarmResult, 1)
	go func() { warmed <- ov.WarmStartup(ctx, 1<<30) }()
	cfg := &wal.RecoveryConfig{RestoreCommand: "cp /x/%f %p", Target: wal.ImmediateTarget(), Action: wal.ActionPromote}
	if _, err := ov.Prepare(ctx, PrepareOptions{Recovery: cfg, Owner: Owner{UID: 1000, GID: 1001}}); err != nil {
		t.Fatal(err)
	}
	res := <-warmed
	if res.Folders < len(tree.Dirs) {
		t.Errorf("warm-up listed %d folders, want at least %d", res.Folders, len(tree.Dirs))
	}
	if conf := string(mustRead(t, ov, "postgresql.auto.conf")); !strings.Contains(conf, "restore_command = 'cp /x/%f %p'") {
		t.Fatalf("postgresql.auto.conf after Prepare alongside the warm-up:\n%s", conf)
	}
	if !ov.Exists(ctx, "recovery.signal") || ov.Exists(ctx, "postmaster.opts") {
		t.Fatal("Prepare's changes to the namespace are not all there")
	}
}

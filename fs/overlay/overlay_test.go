package overlay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pgvault/pgvault/fs/fstest"
	"github.com/pgvault/pgvault/fs/inode"
	"github.com/pgvault/pgvault/internal/pg/wal"
)

func TestOverlayReadsSnapshot(t *testing.T) {
	tree := fstest.SampleTree()
	r, s := fstest.Snapshot(t, tree)
	ov := openTestOverlay(t, r, s, t.TempDir())
	defer ov.Close(context.Background())
	if !ov.Fresh() {
		t.Fatal("a new scratch folder is not fresh")
	}
	for p, want := range tree.Files {
		if got := mustRead(t, ov, p); !bytes.Equal(got, want) {
			t.Fatalf("%s: read %d bytes, want %d", p, len(got), len(want))
		}
	}
	a := ov.Attr(mustNode(t, ov, "base/1/16384"))
	if a.UID != 1000 || a.GID != 1001 || a.Mode != 0o600 || a.Size != int64(len(tree.Files["base/1/16384"])) || !a.MTime.Equal(fstest.ModTime) {
		t.Fatalf("attr = %+v", a)
	}
	if root := ov.Attr(ov.root); root.Mode != 0o700 || root.UID != 1000 {
		t.Fatalf("root attr = %+v: PostgreSQL needs 0700 and its own user", root)
	}
	if got, _ := ov.Readlink(mustNode(t, ov, "lnk")); got != "PG_VERSION" {
		t.Fatalf("readlink = %q", got)
	}
	if ov.Stats().BytesWritten != 0 {
		t.Fatal("reading wrote")
	}
	n := mustNode(t, ov, "base/1/16384")
	if fileExists(filepath.Join(ov.upperDir, upperName(n.ino))) {
		t.Fatal("a read created an upper file")
	}
}

// Every write must read back as if on a plain file, whatever block
// boundaries it crosses, and must copy up only the blocks it touches.
func TestOverlayWrites(t *testing.T) {
	tree := fstest.SampleTree()
	base := tree.Files["base/1/16384"]
	const bs = DefaultBlockSize
	tests := []struct {
		name    string
		off     int64
		data    []byte
		present int64 // blocks copied up
	}{
		{"inside one block", 100, []byte("hello"), 1},
		{"whole block", 2 * bs, bytes.Repeat([]byte{7}, bs), 1},
		{"across a boundary", 3*bs - 2, []byte("abcd"), 2},
		{"across three blocks", 5*bs + 10, bytes.Repeat([]byte{9}, 2*bs), 3},
		{"last partial block", int64(len(base)) - 50, []byte("tail"), 1},
		{"extend past the end", int64(len(base)) - 10, bytes.Repeat([]byte{1}, 5000), 2},
		{"far past the end", int64(len(base)) + 5*bs, []byte("far"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, s := fstest.Snapshot(t, tree)
			ov := openTestOverlay(t, r, s, t.TempDir())
			defer ov.Close(context.Background())
			n := mustNode(t, ov, "base/1/16384")
			if _, err := ov.write(context.Background(), n, tt.data, tt.off); err != nil {
				t.Fatal(err)
			}
			want := append([]byte(nil), base...)
			if end := tt.off + int64(len(tt.data)); end > int64(len(want)) {
				want = append(want, make([]byte, end-int64(len(want)))...)
			}
			copy(want[tt.off:], tt.data)
			if got := mustRead(t, ov, "base/1/16384"); !bytes.Equal(got, want) {
				t.Fatalf("content differs after the write (len %d vs %d)", len(got), len(want))
			}
			if got := n.file.present.count(); got != tt.present {
				t.Fatalf("%d blocks copied up, want %d", got, tt.present)
			}
		})
	}
}

func TestOverlayTruncate(t *testing.T) {
	tree := fstest.SampleTree()
	base := tree.Files["base/1/16384"]
	r, s := fstest.Snapshot(t, tree)
	ov := openTestOverlay(t, r, s, t.TempDir())
	defer ov.Close(context.Background())
	ctx := context.Background()
	n := mustNode(t, ov, "base/1/16384")
	// Shrink into the middle of a block, then grow: the snapshot's tail
	// must not come back.
	if err := ov.truncate(ctx, n, 10000); err != nil {
		t.Fatal(err)
	}
	if err := ov.truncate(ctx, n, 50000); err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte(nil), base[:10000]...), make([]byte, 40000)...)
	if got := mustRead(t, ov, "base/1/16384"); !bytes.Equal(got, want) {
		t.Fatal("shrink then grow shows old bytes")
	}
	if n.file.present.count() != 0 {
		t.Fatal("truncation copied blocks up")
	}
	// A write into the block holding the cut must keep zeros after it.
	if _, err := ov.write(ctx, n, []byte("X"), 9000); err != nil {
		t.Fatal(err)
	}
	want[9000] = 'X'
	if got := mustRead(t, ov, "base/1/16384"); !bytes.Equal(got, want) {
		t.Fatal("write after truncation")
	}
	// Emptying a file makes it local at the next sync.
	if err := ov.truncate(ctx, n, 0); err != nil {
		t.Fatal(err)
	}
	if err := ov.Fsync(ctx, n); err != nil {
		t.Fatal(err)
	}
	if !n.file.local {
		t.Fatal("an emptied file is not local")
	}
	if got := mustRead(t, ov, "base/1/16384"); len(got) != 0 {
		t.Fatal("emptied file has content")
	}
}

func TestOverlayAllocate(t *testing.T) {
	tree := fstest.SampleTree()
	r, s := fstest.Snapshot(t, tree)
	ov := openTestOverlay(t, r, s, t.TempDir())
	defer ov.Close(context.Background())
	ctx := context.Background()
	n := mustNode(t, ov, "base/1/16385")
	want := append([]byte(nil), tree.Files["base/1/16385"]...)
	if err := ov.Allocate(ctx, n, 100, 200, fallocPunchHole|fallocKeepSize); err != nil {
		t.Fatal(err)
	}
	clear(want[100:300])
	if err := ov.Allocate(ctx, n, 0, int64(len(want))+8192, 0); err != nil {
		t.Fatal(err)
	}
	want = append(want, make([]byte, 8192)...)
	if err := ov.Allocate(ctx, n, 0, 1<<30, fallocKeepSize); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, ov, "base/1/16385"); !bytes.Equal(got, want) {
		t.Fatal("content after fallocate")
	}
	if err := ov.Allocate(ctx, n, 0, 10, unix.FALLOC_FL_COLLAPSE_RANGE); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Fatalf("collapse range: %v, want EOPNOTSUPP", err)
	}
}

func TestOverlayNamespace(t *testing.T) {
	tree := fstest.SampleTree()
	r, s := fstest.Snapshot(t, tree)
	ov := openTestOverlay(t, r, s, t.TempDir())
	defer ov.Close(context.Background())
	ctx := context.Background()
	root := ov.root
	me := Owner{UID: 1000, GID: 1001}
	tests := []struct {
		name string
		op   func() error
		want error
	}{
		{"create exists", func() error { _, err := ov.Create(ctx, root, "PG_VERSION", KindFile, 0o600, me, ""); return err }, syscall.EEXIST},
		{"rmdir non-empty", func() error { return ov.Remove(ctx, root, "base", true) }, syscall.ENOTEMPTY},
		{"unlink a directory", func() error { return ov.Remove(ctx, root, "base", false) }, syscall.EISDIR},
		{"rmdir a file", func() error { return ov.Remove(ctx, root, "PG_VERSION", true) }, syscall.ENOTDIR},
		{"unlink missing", func() error { return ov.Remove(ctx, root, "nope", false) }, syscall.ENOENT},
		{"dir into itself", func() error { return ov.Rename(ctx, root, "base", mustNode(t, ov, "base/1"), "x", 0) }, syscall.EINVAL},
		{"noreplace", func() error { return ov.Rename(ctx, root, "PG_VERSION", root, "backup_label", unix.RENAME_NOREPLACE) }, syscall.EEXIST},
		{"file over dir", func() error { return ov.Rename(ctx, root, "PG_VERSION", root, "pg_wal", 0) }, syscall.EISDIR},
		{"dir over file", func() error { return ov.Rename(ctx, root, "pg_wal", root, "PG_VERSION", 0) }, syscall.ENOTDIR},
		{"dir over non-empty dir", func() error { return ov.Rename(ctx, root, "global", root, "base", 0) }, syscall.ENOTEMPTY},
		{"bad name", func() error { _, err := ov.Create(ctx, root, "a/b", KindFile, 0o600, me, ""); return err }, syscall.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.op(); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	// Rename over an existing file replaces it; the moved node keeps its
	// inode number and content.
	src := mustNode(t, ov, "backup_label")
	if err := ov.Rename(ctx, root, "backup_label", root, "PG_VERSION", 0); err != nil {
		t.Fatal(err)
	}
	if got := mustNode(t, ov, "PG_VERSION"); got.ino != src.ino {
		t.Fatal("rename changed the inode number")
	}
	if got := mustRead(t, ov, "PG_VERSION"); !bytes.Equal(got, tree.Files["backup_label"]) {
		t.Fatal("renamed content")
	}
	if ov.Exists(ctx, "backup_label") {
		t.Fatal("old name still there")
	}
	// Exchange.
	if err := ov.Rename(ctx, root, "PG_VERSION", root, "lnk", unix.RENAME_EXCHANGE); err != nil {
		t.Fatal(err)
	}
	if mustNode(t, ov, "lnk").ino != src.ino || mustNode(t, ov, "PG_VERSION").kind != KindSymlink {
		t.Fatal("exchange")
	}
	// mkdir, symlink, rmdir.
	d, err := ov.Create(ctx, root, "newdir", KindDir, 0o750, me, "")
	if err != nil || d.ino < inode.OverlayBase {
		t.Fatal(d, err)
	}
	if _, err := ov.Create(ctx, d, "l", KindSymlink, 0o777, me, "../PG_VERSION"); err != nil {
		t.Fatal(err)
	}
	if err := ov.Remove(ctx, root, "newdir", true); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatal(err)
	}
	if err := ov.Remove(ctx, d, "l", false); err != nil {
		t.Fatal(err)
	}
	if err := ov.Remove(ctx, root, "newdir", true); err != nil {
		t.Fatal(err)
	}
	// An empty snapshot directory can be removed.
	if err := ov.Remove(ctx, mustNode(t, ov, "pg_wal"), "archive_status", true); err != nil {
		t.Fatal(err)
	}
}

func TestOverlayUnlinkOpenFile(t *testing.T) {
	tree := fstest.SampleTree()
	r, s := fstest.Snapshot(t, tree)
	scratch := t.TempDir()
	ov := openTestOverlay(t, r, s, scratch)
	ctx := context.Background()
	n := mustNode(t, ov, "base/1/16385")
	ov.Opened(n, false)
	if _, err := ov.write(ctx, n, []byte("still here"), 0); err != nil {
		t.Fatal(err)
	}
	if err := ov.Remove(ctx, mustNode(t, ov, "base/1"), "16385", false); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := ov.read(ctx, n, buf, 0, nil); err != nil || string(buf) != "still here" {
		t.Fatalf("read of an unlinked open file: %q %v", buf, err)
	}
	if err := ov.Fsync(ctx, n); err != nil {
		t.Fatal(err)
	}
	upper := filepath.Join(ov.upperDir, upperName(n.ino))
	if !fileExists(upper) {
		t.Fatal("upper file gone while open")
	}
	ov.Released(n, false)
	if err := ov.syncJournal(); err != nil {
		t.Fatal(err)
	}
	if fileExists(upper) {
		t.Fatal("upper file of a removed, closed file stays")
	}
	ov.Close(ctx)
	ov = openTestOverlay(t, r, s, scratch)
	defer ov.Close(ctx)
	if ov.Exists(ctx, "base/1/16385") {
		t.Fatal("unlinked file is back after a remount")
	}
}

// TestOverlayCrash: what was fsynced before a kill -9 is there after a
// remount with the same scratch folder; the rest is the old or the new
// content, never anything else.
func TestOverlayCrash(t *testing.T) {
	tree := fstest.SampleTree()
	r, s := fstest.Snapshot(t, tree)
	scratch := t.TempDir()
	ctx := context.Background()
	ov := openTestOverlay(t, r, s, scratch)
	me := Owner{UID: 1000, GID: 1001}

	// Synced changes.
	rel := mustNode(t, ov, "base/1/16384")
	if _, err := ov.write(ctx, rel, []byte("synced page"), 8192*3+5); err != nil {
		t.Fatal(err)
	}
	wd := mustNode(t, ov, "pg_wal")
	seg, err := ov.Create(ctx, wd, "xlogtemp.1", KindFile, 0o600, me, "")
	if err != nil {
		t.Fatal(err)
	}
	walData := fstest.RandBytes(9, 100000)
	if _, err := ov.write(ctx, seg, walData, 0); err != nil {
		t.Fatal(err)
	}
	if err := ov.Fsync(ctx, seg); err != nil {
		t.Fatal(err)
	}
	if err := ov.Rename(ctx, wd, "xlogtemp.1", wd, "000000010000000000000003", 0); err != nil {
		t.Fatal(err)
	}
	if err := ov.Rename(ctx, ov.root, "backup_label", ov.root, "backup_label.old", 0); err != nil {
		t.Fatal(err)
	}
	if err := ov.Setattr(ctx, mustNode(t, ov, "global/pg_control"), AttrChange{Mode: ptr(uint32(0o640))}); err != nil {
		t.Fatal(err)
	}
	if err := ov.Fsync(ctx, rel); err != nil { // also makes the renames durable
		t.Fatal(err)
	}
	// Not synced: a write to another page.
	if _, err := ov.write(ctx, rel, []byte("lost?"), 8192*10); err != nil {
		t.Fatal(err)
	}
	ov.crash()

	ov = openTestOverlay(t, r, s, scratch)
	defer ov.Close(ctx)
	if ov.Fresh() {
		t.Fatal("remount is fresh")
	}
	got := mustRead(t, ov, "base/1/16384")
	if !bytes.Equal(got[8192*3+5:8192*3+16], []byte("synced page")) {
		t.Fatal("synced write lost")
	}
	page := got[8192*10 : 8192*10+5]
	if !bytes.Equal(page, []byte("lost?")) && !bytes.Equal(page, tree.Files["base/1/16384"][8192*10:8192*10+5]) {
		t.Fatalf("unsynced page is neither old nor new: %q", page)
	}
	if got := mustRead(t, ov, "pg_wal/000000010000000000000003"); !bytes.Equal(got, walData) {
		t.Fatal("synced WAL file lost")
	}
	if ov.Exists(ctx, "backup_label") || !ov.Exists(ctx, "backup_label.old") || ov.Exists(ctx, "pg_wal/xlogtemp.1") {
		t.Fatal("renames not replayed")
	}
	if a := ov.Attr(mustNode(t, ov, "global/pg_control")); a.Mode != 0o640 {
		t.Fatalf("chmod not replayed: %o", a.Mode)
	}
	// Inode numbers survive remounts.
	if mustNode(t, ov, "pg_wal/000000010000000000000003").ino != seg.ino {
		t.Fatal("created file's inode number changed")
	}
	// New inode numbers do not collide with replayed ones.
	n, err := ov.Create(ctx, ov.root, "new", KindFile, 0o600, me, "")
	if err != nil || n.ino <= seg.ino {
		t.Fatalf("new inode %d after %d: %v", n.ino, seg.ino, err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestOverlayScratchChecks(t *testing.T) {
	tree := fstest.SampleTree()
	r, s := fstest.Snapshot(t, tree)
	scratch := t.TempDir()
	ctx := context.Background()
	ov := openTestOverlay(t, r, s, scratch)
	if _, err := Open(ctx, r, s, Options{Scratch: scratch}); !errors.Is(err, ErrScratchInUse) {
		t.Fatalf("second open: %v, want ErrScratchInUse", err)
	}
	ov.Close(ctx)
	tree2 := fstest.SampleTree()
	tree2.Files["PG_VERSION"] = []byte("16\n")
	r2, s2 := fstest.Snapshot(t, tree2)
	if _, err := Open(ctx, r2, s2, Options{Scratch: scratch}); !errors.Is(err, ErrScratchMismatch) {
		t.Fatalf("other snapshot: %v, want ErrScratchMismatch", err)
	}
}

func TestPrepare(t *testing.T) {
	tree := startableTree(t)
	r, s := fstest.Snapshot(t, tree)
	scratch := t.TempDir()
	ctx := context.Background()
	ov := openTestOverlay(t, r, s, scratch)
	cfg := &wal.RecoveryConfig{RestoreCommand: wal.RestoreCommand("/usr/bin/pgvault", "wal", "fetch"), Target: wal.NameTarget("before"), Action: wal.ActionPromote}
	res, err := ov.Prepare(ctx, PrepareOptions{Recovery: cfg, Note: "pgvault mount", Owner: Owner{UID: 1000, GID: 1001},
		Settings: []wal.Setting{{Name: "archive_mode", Value: "off"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.InPlaceTablespaces {
		t.Fatal("tablespaces not noticed")
	}
	for _, p := range []string{"postmaster.opts", "tablespace_map"} {
		if ov.Exists(ctx, p) {
			t.Fatalf("%s still there", p)
		}
	}
	if !ov.Exists(ctx, "recovery.signal") || !ov.Exists(ctx, "backup_label") {
		t.Fatal("recovery.signal missing or backup_label gone")
	}
	conf := string(mustRead(t, ov, "postgresql.auto.conf"))
	for _, want := range []string{"work_mem = '8MB'", "# disabled by pgvault restore: restore_command = 'old'",
		"restore_command = '/usr/bin/pgvault wal fetch %f %p'", "recovery_target_name = 'before'",
		"recovery_target_action = 'promote'", "archive_mode = 'off'", "allow_in_place_tablespaces = 'on'"} {
		if !strings.Contains(conf, want) {
			t.Fatalf("postgresql.auto.conf lacks %q:\n%s", want, conf)
		}
	}
	if a := ov.Attr(mustNode(t, ov, "recovery.signal")); a.UID != 1000 || a.Mode != 0o600 {
		t.Fatalf("recovery.signal attr %+v", a)
	}
	if res.ControlState != "in production -> shut down in recovery" {
		t.Fatalf("control state change %q", res.ControlState)
	}
	ov.crash() // Prepare synced everything
	ov = openTestOverlay(t, r, s, scratch)
	defer ov.Close(ctx)
	if got := string(mustRead(t, ov, "postgresql.auto.conf")); got != conf {
		t.Fatal("prepared configuration lost")
	}
	cf, err := wal.ParseControlFile(mustRead(t, ov, wal.ControlFilePath))
	if err != nil {
		t.Fatal(err)
	}
	if cf.State() != wal.DBShutdownedInRecovery || cf.SystemID() != 7710659777962280324 {
		t.Fatalf("pg_control after Prepare: state %v, system id %d", cf.State(), cf.SystemID())
	}
	if a, b := ov.Attr(mustNode(t, ov, wal.ControlFilePath)), ov.Attr(mustNode(t, ov, "PG_VERSION")); a.Mode != b.Mode || a.UID != b.UID || a.GID != b.GID {
		t.Fatalf("pg_control attr %+v, want mode and owner as an unchanged file's (%+v)", a, b)
	}
}

// TestPrepareKeepsControlFile: without backup_label PostgreSQL decides
// from pg_control whether to recover at all, and an unreadable pg_control
// is PostgreSQL's to judge; Prepare leaves both alone.
func TestPrepareKeepsControlFile(t *testing.T) {
	control, err := os.ReadFile("../../internal/pg/wal/testdata/pg15-basebackup/pg_control")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		control []byte
		label   bool
	}{
		{"no backup_label", control, false},
		{"unreadable pg_control", append(append([]byte(nil), control[:16]...), make([]byte, 8192-16)...), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tree := fstest.SampleTree()
			tree.Files[wal.ControlFilePath] = tc.control
			if !tc.label {
				delete(tree.Files, "backup_label")
			}
			r, s := fstest.Snapshot(t, tree)
			ctx := context.Background()
			ov := openTestOverlay(t, r, s, t.TempDir())
			defer ov.Close(ctx)
			res, err := ov.Prepare(ctx, PrepareOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.ControlState != "" || !bytes.Equal(mustRead(t, ov, wal.ControlFilePath), tc.control) {
				t.Fatalf("pg_control changed (%q)", res.ControlState)
			}
		})
	}
}

// TestOverlayModel runs random operations against the overlay and a plain
// in-memory model of the tree, remounting (cleanly or after a crash
// following a full sync) now and then; the two must always agree.
func TestOverlayModel(t *testing.T) {
	for _, tc := range []struct {
		name       string
		copyOnRead int64
	}{{"plain", 0}, {"copy-on-read", 1 << 30}} {
		t.Run(tc.name, func(t *testing.T) { testOverlayModel(t, tc.copyOnRead) })
	}
}

// testOverlayModel applies random operations to an overlay and to a model
// of its files and compares them. With copy-on-read, fills run in the
// background between (and during) the writes, truncations and remounts.
func testOverlayModel(t *testing.T, copyOnRead int64) {
	tree := fstest.SampleTree()
	r, s := fstest.Snapshot(t, tree)
	scratch := t.TempDir()
	ctx := context.Background()
	open := func() *Overlay {
		return openTestOverlayWith(t, r, s, Options{Scratch: scratch, CopyOnRead: copyOnRead})
	}
	ov := open()
	defer func() { ov.Close(ctx) }()
	model := map[string][]byte{}
	for p, b := range tree.Files {
		model[p] = append([]byte(nil), b...)
	}
	rng := rand.New(rand.NewSource(42))
	files := func() []string { return slices.Sorted(maps.Keys(model)) }
	me := Owner{UID: 1000, GID: 1001}
	for step := 0; step < 600; step++ {
		fs := files()
		p := fs[rng.Intn(len(fs))]
		switch op := rng.Intn(10); {
		case op < 4: // write
			n := mustNode(t, ov, p)
			size := int64(len(model[p]))
			off := rng.Int63n(size + 20000)
			data := fstest.RandBytes(int64(step), 1+rng.Intn(30000))
			if _, err := ov.write(ctx, n, data, off); err != nil {
				t.Fatal(err)
			}
			if end := off + int64(len(data)); end > size {
				model[p] = append(model[p], make([]byte, end-size)...)
			}
			copy(model[p][off:], data)
		case op < 6: // truncate
			n := mustNode(t, ov, p)
			size := rng.Int63n(int64(len(model[p])) + 30000)
			if err := ov.truncate(ctx, n, size); err != nil {
				t.Fatal(err)
			}
			if size < int64(len(model[p])) {
				model[p] = model[p][:size]
			} else {
				model[p] = append(model[p], make([]byte, size-int64(len(model[p])))...)
			}
		case op == 6: // create
			name := fmt.Sprintf("new%d", step)
			if _, err := ov.Create(ctx, ov.root, name, KindFile, 0o600, me, ""); err != nil {
				t.Fatal(err)
			}
			model[name] = []byte{}
		case op == 7: // rename over another file, same folder
			dir := filepath.Dir(p)
			var dst string
			for _, q := range fs {
				if q != p && filepath.Dir(q) == dir && rng.Intn(3) == 0 {
					dst = q
					break
				}
			}
			if dst == "" {
				dst = filepath.Join(dir, fmt.Sprintf("moved%d", step))
			}
			d := mustNode(t, ov, dir)
			if err := ov.Rename(ctx, d, filepath.Base(p), d, filepath.Base(dst), 0); err != nil {
				t.Fatal(err)
			}
			model[dst] = model[p]
			delete(model, p)
		case op == 8: // sync, sometimes remount
			if err := ov.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if rng.Intn(2) == 0 {
				ov.crash()
			} else if err := ov.Close(ctx); err != nil {
				t.Fatal(err)
			}
			ov = open()
		case op == 9 && rng.Intn(2) == 0: // hydrate one file a little
			n := mustNode(t, ov, p)
			if n.base != nil {
				if _, _, err := ov.hydrateRun(ctx, n, 16384); err != nil {
					t.Fatal(err)
				}
			}
		case op == 9: // read a range (with copy-on-read, this fills)
			n := mustNode(t, ov, p)
			size := int64(len(model[p]))
			off := rng.Int63n(size + 1)
			buf := make([]byte, rng.Int63n(size-off+1))
			got, err := ov.read(ctx, n, buf, off, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf[:got], model[p][off:off+int64(got)]) || got != len(buf) {
				t.Fatalf("step %d: read of %s at %d differs from the model", step, p, off)
			}
		}
		if step%25 == 0 || step == 599 {
			for _, q := range files() {
				if got := mustRead(t, ov, q); !bytes.Equal(got, model[q]) {
					t.Fatalf("step %d: %s differs from the model (%d vs %d bytes)", step, q, len(got), len(model[q]))
				}
			}
		}
	}
}

func TestCopyOnRead(t *testing.T) {
	tree := fstest.SampleTree()
	r, s := fstest.Snapshot(t, tree)
	ctx := context.Background()
	const p = "base/1/16384" // 300 KiB + 100: three fixed chunks
	want := append([]byte(nil), tree.Files[p]...)
	copy(want[20000:], "mine")

	t.Run("fills, completes and survives a remount", func(t *testing.T) {
		scratch := t.TempDir()
		ov := openTestOverlayWith(t, r, s, Options{Scratch: scratch, CopyOnRead: 1 << 30})
		n := mustNode(t, ov, p)
		if _, err := ov.write(ctx, n, []byte("mine"), 20000); err != nil {
			t.Fatal(err)
		}
		if got := mustRead(t, ov, p); !bytes.Equal(got, want) {
			t.Fatal("first read")
		}
		ov.cor.wait()
		st := ov.Stats()
		if st.CopiedOnRead < int64(len(want))-8192 {
			t.Fatalf("copied %d bytes on read, want about %d", st.CopiedOnRead, len(want))
		}
		if !n.file.local {
			t.Fatal("a file read whole did not become local")
		}
		if got := mustRead(t, ov, p); !bytes.Equal(got, want) {
			t.Fatal("copy-on-read overwrote a write")
		}
		if ov.Stats().BaseBytesRead != st.BaseBytesRead {
			t.Fatal("a re-read went to the repository")
		}
		if err := ov.Close(ctx); err != nil {
			t.Fatal(err)
		}
		ov = openTestOverlay(t, r, s, scratch)
		defer ov.Close(ctx)
		if !mustNode(t, ov, p).file.local {
			t.Fatal("local state lost across remount")
		}
		if got := mustRead(t, ov, p); !bytes.Equal(got, want) {
			t.Fatal("content after remount")
		}
	})

	t.Run("stops at the limit", func(t *testing.T) {
		ov := openTestOverlayWith(t, r, s, Options{Scratch: t.TempDir(), CopyOnRead: 1})
		defer ov.Close(ctx)
		mustRead(t, ov, p)
		ov.cor.wait()
		mustRead(t, ov, p)
		ov.cor.wait()
		if got := ov.Stats().CopiedOnRead; got == 0 || got > 128<<10 {
			t.Fatalf("copied %d bytes with a 1-byte limit: want one chunk at most", got)
		}
		if mustNode(t, ov, p).file.local {
			t.Fatal("file became local past the limit")
		}
	})

	t.Run("off", func(t *testing.T) {
		ov := openTestOverlay(t, r, s, t.TempDir())
		defer ov.Close(ctx)
		mustRead(t, ov, p)
		ov.cor.wait()
		if got := ov.Stats().CopiedOnRead; got != 0 {
			t.Fatalf("copied %d bytes with copy-on-read off", got)
		}
	})
}

// TestCopyOnReadCompletesHotFiles: once reads have filled half of a file,
// the rest is copied in the background and the file becomes local.
func TestCopyOnReadCompletesHotFiles(t *testing.T) {
	tree := fstest.SampleTree()
	const p = "base/1/big"
	tree.Files[p] = fstest.RandBytes(9, 2<<20) // 16 fixed chunks, 256 blocks
	r, s := fstest.Snapshot(t, tree)
	ctx := context.Background()
	ov := openTestOverlayWith(t, r, s, Options{Scratch: t.TempDir(), CopyOnRead: 1 << 30})
	defer ov.Close(ctx)
	n := mustNode(t, ov, p)
	buf := make([]byte, 1<<20+1)
	if _, err := ov.read(ctx, n, buf, 0, nil); err != nil {
		t.Fatal(err)
	}
	ov.cor.wait()
	if !n.file.local {
		t.Fatalf("a file read past half did not become local (copied %d bytes)", ov.Stats().CopiedOnRead)
	}
	before := ov.Stats().BaseBytesRead
	if got := mustRead(t, ov, p); !bytes.Equal(got, tree.Files[p]) {
		t.Fatal("content after completion")
	}
	if ov.Stats().BaseBytesRead != before {
		t.Fatal("reads after completion still go to the repository")
	}

	// A miss fetches the window around it (fillWindowChunks chunks and
	// the next one), not the whole file: under half, no completion.
	const q = "base/1/bigger"
	tree.Files[q] = fstest.RandBytes(10, 12<<20) // 96 chunks, 3 windows
	r2, s2 := fstest.Snapshot(t, tree)
	ov2 := openTestOverlayWith(t, r2, s2, Options{Scratch: t.TempDir(), CopyOnRead: 1 << 30})
	defer ov2.Close(ctx)
	n2 := mustNode(t, ov2, q)
	if _, err := ov2.read(ctx, n2, make([]byte, 512<<10), 0, nil); err != nil {
		t.Fatal(err)
	}
	ov2.cor.wait()
	window := int64(fillWindowChunks+1) * 128 << 10
	if n2.file.local || ov2.Stats().CopiedOnRead != window {
		t.Fatalf("a read of the first 512 KiB of 12 MiB copied %d bytes, want its window's %d", ov2.Stats().CopiedOnRead, window)
	}
	before = ov2.Stats().BaseBytesRead
	got := make([]byte, 64<<10)
	if _, err := ov2.read(ctx, n2, got, window-int64(len(got)), nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, tree.Files[q][window-int64(len(got)):window]) || ov2.Stats().BaseBytesRead != before {
		t.Fatal("the end of the window is not read from the upper file")
	}
}

func TestHydrate(t *testing.T) {
	tree := fstest.SampleTree()
	r, s := fstest.Snapshot(t, tree)
	scratch := t.TempDir()
	ctx := context.Background()
	ov := openTestOverlay(t, r, s, scratch)
	n := mustNode(t, ov, "base/1/16384")
	if _, err := ov.write(ctx, n, []byte("mine"), 20000); err != nil {
		t.Fatal(err)
	}
	res, err := ov.Hydrate(ctx, HydrateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes == 0 {
		t.Fatal("nothing hydrated")
	}
	for _, p := range []string{"base/1/16384", "global/pg_control", "PG_VERSION"} {
		if !mustNode(t, ov, p).file.local {
			t.Fatalf("%s not local after hydration", p)
		}
	}
	want := append([]byte(nil), tree.Files["base/1/16384"]...)
	copy(want[20000:], "mine")
	if got := mustRead(t, ov, "base/1/16384"); !bytes.Equal(got, want) {
		t.Fatal("hydration overwrote a write")
	}
	before := ov.Stats().BaseBytesRead
	for p := range tree.Files {
		if ov.Exists(ctx, p) {
			mustRead(t, ov, p)
		}
	}
	if ov.Stats().BaseBytesRead != before {
		t.Fatal("reads after hydration still go to the repository")
	}
	ov.crash()
	ov = openTestOverlay(t, r, s, scratch)
	defer ov.Close(ctx)
	if !mustNode(t, ov, "base/1/16384").file.local {
		t.Fatal("local state lost across remount")
	}
	if got := mustRead(t, ov, "base/1/16384"); !bytes.Equal(got, want) {
		t.Fatal("content after remount")
	}
}

func TestCompactKeepsState(t *testing.T) {
	tree := fstest.SampleTree()
	r, s := fstest.Snapshot(t, tree)
	scratch := t.TempDir()
	ctx := context.Background()
	ov := openTestOverlay(t, r, s, scratch)
	n := mustNode(t, ov, "base/1/16384")
	for i := 0; i < 100; i++ {
		if _, err := ov.write(ctx, n, []byte{byte(i)}, int64(i)*3000); err != nil {
			t.Fatal(err)
		}
		if err := ov.Fsync(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	want := mustRead(t, ov, "base/1/16384")
	recs := ov.Stats().JournalRecords
	if err := ov.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if after := ov.Stats().JournalRecords; after >= recs || after > 2 {
		t.Fatalf("compaction left %d of %d records", after, recs)
	}
	ov.crash()
	ov = openTestOverlay(t, r, s, scratch)
	defer ov.Close(ctx)
	if got := mustRead(t, ov, "base/1/16384"); !bytes.Equal(got, want) {
		t.Fatal("content after compaction and remount")
	}
}

package overlay

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	iofs "io/fs"
	"os/exec"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/pgvault/pgvault/fs/fstest"
	"golang.org/x/sys/unix"
)

// TestChanges: each case changes a fresh overlay of fstest.SampleTree, and
// Changes must list exactly what differs from the snapshot, the same
// live, after a crash that followed a Sync (journal replay) and after a
// clean close (compacted journal). Bytes outside the changed ranges must
// read as the snapshot content.
func TestChanges(t *testing.T) {
	tree := fstest.SampleTree()
	size := func(p string) int64 { return int64(len(tree.Files[p])) }
	const bs = DefaultBlockSize
	const rel = "base/1/16384" // 307300 bytes: 37 whole blocks and 4196 bytes
	relSize := size(rel)
	me := Owner{UID: 1000, GID: 1001}
	tests := []struct {
		name string
		do   func(t *testing.T, ov *Overlay)
		want []FileChange
	}{
		{"reads change nothing", func(t *testing.T, ov *Overlay) {
			mustRead(t, ov, rel)
			mustRead(t, ov, "pg_tblspc/16385/PG_15_202209061/1/16400")
		}, nil},
		{"one block written", func(t *testing.T, ov *Overlay) {
			mustWrite(t, ov, rel, 2*bs+5, []byte("x"))
		}, []FileChange{{Op: Modified, Kind: KindFile, Path: rel, Size: relSize, BaseSize: relSize, Changed: []Range{{2 * bs, bs}}}}},
		{"blocks merge into runs", func(t *testing.T, ov *Overlay) {
			mustWrite(t, ov, rel, bs, []byte("a"))
			mustWrite(t, ov, rel, 2*bs, []byte("b"))
			mustWrite(t, ov, rel, 5*bs-1, []byte("cd"))
		}, []FileChange{{Op: Modified, Kind: KindFile, Path: rel, Size: relSize, BaseSize: relSize, Changed: []Range{{bs, 2 * bs}, {4 * bs, 2 * bs}}}}},
		{"last partial block", func(t *testing.T, ov *Overlay) {
			mustWrite(t, ov, rel, relSize-4, []byte("tail"))
		}, []FileChange{{Op: Modified, Kind: KindFile, Path: rel, Size: relSize, BaseSize: relSize, Changed: []Range{{37 * bs, relSize - 37*bs}}}}},
		{"write past the end", func(t *testing.T, ov *Overlay) {
			mustWrite(t, ov, rel, relSize+2*bs, []byte("far"))
		}, []FileChange{{Op: Modified, Kind: KindFile, Path: rel, Size: relSize + 2*bs + 3, BaseSize: relSize, Changed: []Range{{relSize, 2*bs + 3}}}}},
		{"truncated", func(t *testing.T, ov *Overlay) {
			mustTruncate(t, ov, "base/1/16385", 10000)
		}, []FileChange{{Op: Modified, Kind: KindFile, Path: "base/1/16385", Size: 10000, BaseSize: 3 * bs}}},
		{"extended", func(t *testing.T, ov *Overlay) {
			mustTruncate(t, ov, "base/1/16385", 30000)
		}, []FileChange{{Op: Modified, Kind: KindFile, Path: "base/1/16385", Size: 30000, BaseSize: 3 * bs, Changed: []Range{{3 * bs, 30000 - 3*bs}}}}},
		{"shrunk then grown", func(t *testing.T, ov *Overlay) {
			mustTruncate(t, ov, "base/1/16385", 10000)
			mustTruncate(t, ov, "base/1/16385", 20000)
		}, []FileChange{{Op: Modified, Kind: KindFile, Path: "base/1/16385", Size: 20000, BaseSize: 3 * bs, Changed: []Range{{10000, 10000}}}}},
		{"emptied", func(t *testing.T, ov *Overlay) {
			mustTruncate(t, ov, "global/pg_control", 0) // held whole from its next sync
		}, []FileChange{{Op: Modified, Kind: KindFile, Path: "global/pg_control", BaseSize: bs}}},
		{"attributes only", func(t *testing.T, ov *Overlay) {
			mode, mtime := uint32(0o640), time.Unix(1, 0)
			if err := ov.Setattr(context.Background(), mustNode(t, ov, "PG_VERSION"), AttrChange{Mode: &mode, MTime: &mtime}); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"created", func(t *testing.T, ov *Overlay) {
			ctx := context.Background()
			if err := ov.WriteFile(ctx, "new.conf", []byte("port = 5433\n"), 0o600, me); err != nil {
				t.Fatal(err)
			}
			mustCreate(t, ov, "", "empty", KindFile, "")
			mustCreate(t, ov, "", "d", KindDir, "")
			if err := ov.WriteFile(ctx, "d/f", []byte("abc"), 0o600, me); err != nil {
				t.Fatal(err)
			}
			mustCreate(t, ov, "", "s", KindSymlink, "PG_VERSION")
		}, []FileChange{
			{Op: Created, Kind: KindDir, Path: "d"},
			{Op: Created, Kind: KindFile, Path: "d/f", Size: 3, Changed: []Range{{0, 3}}},
			{Op: Created, Kind: KindFile, Path: "empty"},
			{Op: Created, Kind: KindFile, Path: "new.conf", Size: 12, Changed: []Range{{0, 12}}},
			{Op: Created, Kind: KindSymlink, Path: "s", Target: "PG_VERSION"},
		}},
		{"removed", func(t *testing.T, ov *Overlay) {
			mustWrite(t, ov, "base/1/16385", 0, []byte("gone anyway"))
			mustRemove(t, ov, "base/1", "16385", false)
			mustRemove(t, ov, "", "postmaster.opts", false)
			mustRemove(t, ov, "pg_wal", "archive_status", true)
		}, []FileChange{
			{Op: Removed, Kind: KindFile, Path: "base/1/16385", BaseSize: 3 * bs},
			{Op: Removed, Kind: KindDir, Path: "pg_wal/archive_status"},
			{Op: Removed, Kind: KindFile, Path: "postmaster.opts", BaseSize: size("postmaster.opts")},
		}},
		{"renamed", func(t *testing.T, ov *Overlay) {
			mustRename(t, ov, "", "backup_label", "", "backup_label.old", 0)
		}, []FileChange{
			{Op: Removed, Kind: KindFile, Path: "backup_label", BaseSize: size("backup_label")},
			{Op: Moved, Kind: KindFile, Path: "backup_label.old", From: "backup_label", Size: size("backup_label"), BaseSize: size("backup_label")},
		}},
		{"renamed over another file", func(t *testing.T, ov *Overlay) {
			mustRename(t, ov, "", "backup_label", "", "PG_VERSION", 0)
		}, []FileChange{
			{Op: Moved, Kind: KindFile, Path: "PG_VERSION", From: "backup_label", Size: size("backup_label"), BaseSize: size("backup_label")},
			{Op: Removed, Kind: KindFile, Path: "backup_label", BaseSize: size("backup_label")},
		}},
		{"exchanged", func(t *testing.T, ov *Overlay) {
			mustRename(t, ov, "", "PG_VERSION", "", "backup_label", unix.RENAME_EXCHANGE)
		}, []FileChange{
			{Op: Moved, Kind: KindFile, Path: "PG_VERSION", From: "backup_label", Size: size("backup_label"), BaseSize: size("backup_label")},
			{Op: Moved, Kind: KindFile, Path: "backup_label", From: "PG_VERSION", Size: size("PG_VERSION"), BaseSize: size("PG_VERSION")},
		}},
		{"folder renamed, then a file below it written", func(t *testing.T, ov *Overlay) {
			mustRename(t, ov, "base", "1", "base", "2", 0)
			mustWrite(t, ov, "base/2/16384", 0, []byte("x"))
		}, []FileChange{
			{Op: Removed, Kind: KindDir, Path: "base/1"},
			{Op: Moved, Kind: KindDir, Path: "base/2", From: "base/1"},
			{Op: Modified, Kind: KindFile, Path: "base/2/16384", From: rel, Size: relSize, BaseSize: relSize, Changed: []Range{{0, bs}}},
		}},
		{"file moved into a new folder and written", func(t *testing.T, ov *Overlay) {
			mustCreate(t, ov, "", "newdir", KindDir, "")
			mustRename(t, ov, "base/1", "16385", "newdir", "x", 0)
			mustWrite(t, ov, "newdir/x", 3*bs-1, []byte("yz"))
		}, []FileChange{
			{Op: Removed, Kind: KindFile, Path: "base/1/16385", BaseSize: 3 * bs},
			{Op: Created, Kind: KindDir, Path: "newdir"},
			{Op: Moved, Kind: KindFile, Path: "newdir/x", From: "base/1/16385", Size: 3*bs + 1, BaseSize: 3 * bs, Changed: []Range{{2 * bs, bs + 1}}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			r, s := fstest.Snapshot(t, tree)
			scratch := t.TempDir()
			ov := openTestOverlay(t, r, s, scratch)
			tt.do(t, ov)
			check := func(when string) {
				t.Helper()
				got, err := ov.Changes(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("%s: changes\n got %s\nwant %s", when, dump(got), dump(tt.want))
				}
				checkUnchangedBytes(t, ov, tree, got)
			}
			check("live")
			if err := ov.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			ov.crash()
			ov = openTestOverlay(t, r, s, scratch)
			check("after a crash and a replay")
			if err := ov.Close(ctx); err != nil {
				t.Fatal(err)
			}
			ov = openTestOverlay(t, r, s, scratch)
			defer ov.Close(ctx)
			check("after compaction and a remount")
		})
	}
}

// checkUnchangedBytes: a listed file's bytes outside its changed ranges
// are its snapshot content's, and a Created file reads Size bytes.
func checkUnchangedBytes(t *testing.T, ov *Overlay, tree *fstest.Tree, changes []FileChange) {
	t.Helper()
	ctx := context.Background()
	for _, c := range changes {
		if c.Kind != KindFile || c.Op == Removed {
			continue
		}
		f, err := ov.OpenFile(ctx, c.Path)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, f.Size())
		if n, err := f.ReadAt(got, 0); n != len(got) || (err != nil && err != io.EOF) {
			t.Fatalf("%s: read %d of %d bytes: %v", c.Path, n, len(got), err)
		}
		f.Close()
		if int64(len(got)) != c.Size {
			t.Fatalf("%s: %d bytes, Changes says %d", c.Path, len(got), c.Size)
		}
		if c.Op == Created {
			continue
		}
		from := c.Path
		if c.From != "" {
			from = c.From
		}
		base := tree.Files[from]
		same := make([]bool, min(len(got), len(base)))
		for i := range same {
			same[i] = true
		}
		for _, r := range c.Changed {
			for i := r.Off; i < r.Off+r.Len && i < int64(len(same)); i++ {
				same[i] = false
			}
		}
		for i, want := range same {
			if want && got[i] != base[i] {
				t.Fatalf("%s: byte %d differs from %s in the snapshot, outside the changed ranges %v", c.Path, i, from, c.Changed)
			}
		}
	}
}

func dump(cs []FileChange) string {
	b, _ := json.MarshalIndent(cs, "", " ")
	return string(b)
}

// TestChangesWithCopyOnRead: blocks copy-on-read filled are listed as
// possibly changed (the journal cannot tell them from written ones), and
// their content is the snapshot's.
func TestChangesWithCopyOnRead(t *testing.T) {
	tree := fstest.SampleTree()
	r, s := fstest.Snapshot(t, tree)
	ctx := context.Background()
	ov := openTestOverlayWith(t, r, s, Options{Scratch: t.TempDir(), CopyOnRead: 1 << 30})
	defer ov.Close(ctx)
	n := mustNode(t, ov, "base/1/16384")
	if _, err := ov.read(ctx, n, make([]byte, 100), 0, nil); err != nil {
		t.Fatal(err)
	}
	ov.cor.wait()
	got, err := ov.Changes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Op != Modified || len(got[0].Changed) == 0 {
		t.Fatalf("changes after a copy-on-read: %s", dump(got))
	}
	checkUnchangedBytes(t, ov, tree, got)
}

func TestChangesJSON(t *testing.T) {
	b, err := json.Marshal(FileChange{Op: Moved, Kind: KindDir, Path: "base/2", From: "base/1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"op":"moved","kind":"dir","path":"base/2","from":"base/1"}`; string(b) != want {
		t.Fatalf("JSON %s, want %s", b, want)
	}
}

// TestOpenFile: File is an io.ReaderAt over the file's current content,
// and keeps a file removed meanwhile readable until Close.
func TestOpenFile(t *testing.T) {
	tree := fstest.SampleTree()
	r, s := fstest.Snapshot(t, tree)
	ctx := context.Background()
	ov := openTestOverlay(t, r, s, t.TempDir())
	defer ov.Close(ctx)
	const p = "base/1/16384"
	want := append([]byte(nil), tree.Files[p]...)
	copy(want[20000:], "mine")
	mustWrite(t, ov, p, 20000, []byte("mine"))
	if err := ov.WriteFile(ctx, "new", []byte("created"), 0o600, Owner{}); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{p: want, "new": []byte("created"), "base/1/empty": {}} {
		f, err := ov.OpenFile(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if f.Size() != int64(len(content)) {
			t.Fatalf("%s: size %d, want %d", name, f.Size(), len(content))
		}
		if err := iotest.TestReader(io.NewSectionReader(f, 0, f.Size()), content); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n, err := f.ReadAt(make([]byte, 10), f.Size()); n != 0 || err != io.EOF {
			t.Fatalf("%s: read at the end = %d, %v; want 0, io.EOF", name, n, err)
		}
		f.Close()
		f.Close()
	}

	f, err := ov.OpenFile(ctx, "new")
	if err != nil {
		t.Fatal(err)
	}
	mustRemove(t, ov, "", "new", false)
	if err := ov.Fsync(ctx, ov.Root()); err != nil { // a durable removal drops unopened upper files
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "created" {
		t.Fatalf("a file removed while open reads %q, %v", buf, err)
	}
	f.Close()

	if _, err := ov.OpenFile(ctx, "nope"); !errors.Is(err, iofs.ErrNotExist) || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("missing file: %v, want ENOENT", err)
	}
	if _, err := ov.OpenFile(ctx, "base"); err == nil {
		t.Fatal("opened a folder as a file")
	}
	if a, err := ov.Stat(ctx, p); err != nil || a.Size != int64(len(want)) || a.Kind != KindFile {
		t.Fatalf("stat %s = %+v, %v", p, a, err)
	}
}

// TestNoFUSE: the engine must stay usable without a mount (synthetic
// backups read it directly), so it imports neither go-fuse nor package fs.
func TestNoFUSE(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/hanwen/go-fuse") || dep == "github.com/pgvault/pgvault/fs" {
			t.Errorf("fs/overlay depends on %s", dep)
		}
	}
}

func mustWrite(t *testing.T, ov *Overlay, p string, off int64, data []byte) {
	t.Helper()
	if _, err := ov.Write(context.Background(), mustNode(t, ov, p), data, off); err != nil {
		t.Fatal(err)
	}
}

func mustTruncate(t *testing.T, ov *Overlay, p string, size int64) {
	t.Helper()
	if err := ov.Setattr(context.Background(), mustNode(t, ov, p), AttrChange{Size: &size}); err != nil {
		t.Fatal(err)
	}
}

func mustCreate(t *testing.T, ov *Overlay, dir, name string, kind Kind, target string) {
	t.Helper()
	if _, err := ov.Create(context.Background(), mustNode(t, ov, dir), name, kind, 0o700, Owner{}, target); err != nil {
		t.Fatal(err)
	}
}

func mustRemove(t *testing.T, ov *Overlay, dir, name string, isDir bool) {
	t.Helper()
	if err := ov.Remove(context.Background(), mustNode(t, ov, dir), name, isDir); err != nil {
		t.Fatal(err)
	}
}

func mustRename(t *testing.T, ov *Overlay, from, name, to, newName string, flags uint32) {
	t.Helper()
	if err := ov.Rename(context.Background(), mustNode(t, ov, from), name, mustNode(t, ov, to), newName, flags); err != nil {
		t.Fatal(err)
	}
}

package overlay

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgvault/pgvault/fs/fstest"
)

// cloneFixture is an overlay with a WAL segment in its repository and an
// empty file created in pg_wal, as restore_command's cp leaves it.
func cloneFixture(t *testing.T, copyOnRead int64) (ov *Overlay, seg []byte, scratch string, n *Node, reopen func() *Overlay) {
	t.Helper()
	ctx := context.Background()
	r, s := fstest.Snapshot(t, fstest.SampleTree())
	seg = fstest.RandBytes(42, 1<<20+123)
	if _, err := r.SaveWAL(ctx, 1, "000000010000000000000002", seg, false); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	scratch = t.TempDir()
	open := func() *Overlay {
		return openTestOverlayWith(t, r, s, Options{Scratch: scratch, CopyOnRead: copyOnRead})
	}
	ov = open()
	d := mustNode(t, ov, "pg_wal")
	n, err := ov.Create(ctx, d, "RECOVERYXLOG", KindFile, 0o600, Owner{UID: 1000, GID: 1001}, "")
	if err != nil {
		t.Fatal(err)
	}
	return ov, seg, scratch, n, open
}

func upperBytes(t *testing.T, scratch string) int64 {
	t.Helper()
	var total int64
	ents, _ := os.ReadDir(filepath.Join(scratch, scratchUpper))
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			total += fi.Size()
		}
	}
	return total
}

// TestCloneWAL: a clone reads as the segment, takes no room in the
// scratch folder, survives a crash once synced, a rename and compaction,
// and a write into it copies up only what it writes.
func TestCloneWAL(t *testing.T) {
	ctx := context.Background()
	ov, seg, scratch, n, reopen := cloneFixture(t, 1<<30)
	c := WALRef{Timeline: 1, Name: "000000010000000000000002", Size: int64(len(seg))}
	ok, err := ov.CloneWAL(ctx, n, c)
	if err != nil || !ok {
		t.Fatalf("CloneWAL = %v, %v", ok, err)
	}
	if got := mustRead(t, ov, "pg_wal/RECOVERYXLOG"); !bytes.Equal(got, seg) {
		t.Fatalf("clone reads %d bytes, not the segment", len(got))
	}
	ov.stopCopyOnRead() // waits for copies the read started
	if u := upperBytes(t, scratch); u != 0 {
		t.Fatalf("the clone, read once, took %d bytes of scratch space", u)
	}
	// A second clone into the now non-empty file is refused.
	if ok, err := ov.CloneWAL(ctx, n, c); ok || err != nil {
		t.Fatalf("clone into a file that is already a clone = %v, %v", ok, err)
	}
	// PostgreSQL's durable_rename: fsync, rename, fsync.
	if err := ov.Fsync(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := ov.Rename(ctx, mustNode(t, ov, "pg_wal"), "RECOVERYXLOG", mustNode(t, ov, "pg_wal"), "000000010000000000000002", 0); err != nil {
		t.Fatal(err)
	}
	if err := ov.syncJournal(); err != nil {
		t.Fatal(err)
	}
	ov.crash()

	ov = reopen()
	p := "pg_wal/000000010000000000000002"
	if got := mustRead(t, ov, p); !bytes.Equal(got, seg) {
		t.Fatalf("after a crash the clone reads %d bytes, not the segment", len(got))
	}
	// A write copies up its blocks; the rest still reads from the WAL.
	want := append([]byte(nil), seg...)
	patch := bytes.Repeat([]byte{7}, 8192)
	copy(want[16384:], patch)
	if _, err := ov.write(ctx, mustNode(t, ov, p), patch, 16384); err != nil {
		t.Fatal(err)
	}
	if err := ov.Fsync(ctx, mustNode(t, ov, p)); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, ov, p); !bytes.Equal(got, want) {
		t.Fatal("the written clone reads wrong")
	}
	if u := upperBytes(t, scratch); u > 64<<10 {
		t.Fatalf("an 8 KiB write into the clone took %d bytes of scratch space", u)
	}
	if err := ov.Close(ctx); err != nil { // compacts the journal
		t.Fatal(err)
	}
	ov = reopen()
	defer ov.Close(ctx)
	if got := mustRead(t, ov, p); !bytes.Equal(got, want) {
		t.Fatal("after compaction and a remount the written clone reads wrong")
	}
}

// TestCloneWALKilled: the clone is one journal frame, written whole by
// one write(2): after a kill -9 without any sync the file is the segment,
// never a part of it.
func TestCloneWALKilled(t *testing.T) {
	ctx := context.Background()
	ov, seg, _, n, reopen := cloneFixture(t, 0)
	if ok, err := ov.CloneWAL(ctx, n, WALRef{Timeline: 1, Name: "000000010000000000000002", Size: int64(len(seg))}); !ok || err != nil {
		t.Fatalf("CloneWAL = %v, %v", ok, err)
	}
	ov.crash()
	ov = reopen()
	defer ov.Close(ctx)
	if got := mustRead(t, ov, "pg_wal/RECOVERYXLOG"); !bytes.Equal(got, seg) {
		t.Fatalf("after kill -9 the clone reads %d bytes, not the segment", len(got))
	}
}

// TestCloneWALRefused: only an empty file created in the overlay, with
// no passthrough handle open, becomes a clone.
func TestCloneWALRefused(t *testing.T) {
	ctx := context.Background()
	ov, seg, _, n, _ := cloneFixture(t, 0)
	defer ov.Close(ctx)
	c := WALRef{Timeline: 1, Name: "000000010000000000000002", Size: int64(len(seg))}
	tests := []struct {
		name string
		node func() *Node
	}{
		{"a file of the snapshot", func() *Node { return mustNode(t, ov, "base/1/empty") }},
		{"a file with content", func() *Node {
			if _, err := ov.write(ctx, n, []byte("x"), 0); err != nil {
				t.Fatal(err)
			}
			return n
		}},
		{"a file open by passthrough", func() *Node {
			m, err := ov.Create(ctx, mustNode(t, ov, "pg_wal"), "other", KindFile, 0o600, Owner{}, "")
			if err != nil {
				t.Fatal(err)
			}
			ov.Opened(m, true)
			return m
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if ok, err := ov.CloneWAL(ctx, tt.node(), c); ok || err != nil {
				t.Fatalf("CloneWAL = %v, %v; want refused", ok, err)
			}
		})
	}
}

// TestCloneWALOverwritten: a clone whose every block was written is held
// whole in the overlay, and stays so across compaction and a remount
// (PostgreSQL recycles old segments by renaming and rewriting them).
func TestCloneWALOverwritten(t *testing.T) {
	ctx := context.Background()
	ov, seg, _, n, reopen := cloneFixture(t, 0)
	if ok, err := ov.CloneWAL(ctx, n, WALRef{Timeline: 1, Name: "000000010000000000000002", Size: int64(len(seg))}); !ok || err != nil {
		t.Fatalf("CloneWAL = %v, %v", ok, err)
	}
	want := fstest.RandBytes(43, len(seg))
	if _, err := ov.write(ctx, n, want, 0); err != nil {
		t.Fatal(err)
	}
	if err := ov.Fsync(ctx, n); err != nil {
		t.Fatal(err)
	}
	if !n.file.local {
		t.Fatal("a clone written all over is not held whole")
	}
	if err := ov.Close(ctx); err != nil {
		t.Fatal(err)
	}
	ov = reopen()
	defer ov.Close(ctx)
	if got := mustRead(t, ov, "pg_wal/RECOVERYXLOG"); !bytes.Equal(got, want) {
		t.Fatal("after compaction and a remount the rewritten clone reads the segment again")
	}
}

// TestHydrateCopiesWALClones: hydration makes the overlay independent of
// the repository, WAL copies included, and no new copy is a reference.
func TestHydrateCopiesWALClones(t *testing.T) {
	ctx := context.Background()
	ov, seg, _, n, reopen := cloneFixture(t, 0)
	const name = "000000010000000000000002"
	if ok, err := ov.CloneWAL(ctx, n, WALRef{Timeline: 1, Name: name, Size: int64(len(seg))}); !ok || err != nil {
		t.Fatalf("CloneWAL = %v, %v", ok, err)
	}
	// PostgreSQL keeps the restored segment under its own name.
	if err := ov.Rename(ctx, mustNode(t, ov, "pg_wal"), "RECOVERYXLOG", mustNode(t, ov, "pg_wal"), name, 0); err != nil {
		t.Fatal(err)
	}
	res, err := ov.Hydrate(ctx, HydrateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := "pg_wal/" + name
	if !mustNode(t, ov, p).file.local {
		t.Fatalf("the WAL copy is not local after hydration (%+v)", res)
	}
	m, err := ov.Create(ctx, mustNode(t, ov, "pg_wal"), "RECOVERYXLOG", KindFile, 0o600, Owner{}, "")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := ov.CloneWAL(ctx, m, WALRef{Timeline: 1, Name: name, Size: int64(len(seg))}); ok || err != nil {
		t.Fatalf("CloneWAL after hydration = %v, %v; want refused", ok, err)
	}
	// The segment leaves the repository; the hydrated copy stays.
	if err := ov.r.DeleteWAL(ctx, 1, name); err != nil {
		t.Fatal(err)
	}
	ov.crash()
	ov = reopen()
	defer ov.Close(ctx)
	before := ov.Stats().BaseBytesRead
	if got := mustRead(t, ov, p); !bytes.Equal(got, seg) {
		t.Fatalf("the hydrated WAL copy reads %d bytes, not the segment", len(got))
	}
	if ov.Stats().BaseBytesRead != before {
		t.Fatal("the hydrated WAL copy is still read from the repository")
	}
}

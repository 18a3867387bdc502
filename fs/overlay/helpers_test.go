package overlay

import (
	"context"
	"os"
	"testing"

	"github.com/pgvault/pgvault/fs/fstest"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// The shared fixtures (a sample tree stored as a snapshot, random bytes)
// are in fs/fstest.

// startableTree is fstest.SampleTree with a real PostgreSQL 15
// pg_control, as Prepare needs.
func startableTree(t testing.TB) *fstest.Tree {
	t.Helper()
	tree := fstest.SampleTree()
	control, err := os.ReadFile("../../internal/pg/wal/testdata/pg15-basebackup/pg_control")
	if err != nil {
		t.Fatal(err)
	}
	tree.Files[wal.ControlFilePath] = control
	return tree
}

// openTestOverlay opens an overlay of s in scratch.
func openTestOverlay(t testing.TB, r *repo.Repository, s *repo.Snapshot, scratch string) *Overlay {
	t.Helper()
	return openTestOverlayWith(t, r, s, Options{Scratch: scratch})
}

// openTestOverlayWith opens an overlay with opts (owner 1000:1001).
func openTestOverlayWith(t testing.TB, r *repo.Repository, s *repo.Snapshot, opts Options) *Overlay {
	t.Helper()
	opts.Owner = Owner{UID: 1000, GID: 1001}
	ov, err := Open(context.Background(), r, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	return ov
}

// crash drops an overlay the way kill -9 does: nothing synced, no
// compaction; only what was written to files survives (the page cache
// keeps it).
func (ov *Overlay) crash() {
	ov.stopCopyOnRead()
	for _, n := range ov.fileNodes() {
		if n.file.upper != nil {
			n.file.upper.Close()
		}
	}
	ov.j.f.Close()
	ov.lock.Close()
}

func mustRead(t testing.TB, ov *Overlay, p string) []byte {
	t.Helper()
	b, err := ov.ReadFile(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustNode(t testing.TB, ov *Overlay, p string) *Node {
	t.Helper()
	n, err := ov.walkPath(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

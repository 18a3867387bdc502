package fs

import (
	"context"
	"testing"

	"github.com/pgvault/pgvault/fs/overlay"
	"github.com/pgvault/pgvault/repo"
)

// The shared fixtures (a sample tree stored as a snapshot, random bytes)
// are in fs/fstest.

// openTestOverlay opens an overlay of s in scratch.
func openTestOverlay(t testing.TB, r *repo.Repository, s *repo.Snapshot, scratch string) *overlay.Overlay {
	t.Helper()
	return openTestOverlayWith(t, r, s, overlay.Options{Scratch: scratch})
}

// openTestOverlayWith opens an overlay with opts (owner 1000:1001).
func openTestOverlayWith(t testing.TB, r *repo.Repository, s *repo.Snapshot, opts overlay.Options) *overlay.Overlay {
	t.Helper()
	opts.Owner = overlay.Owner{UID: 1000, GID: 1001}
	ov, err := overlay.Open(context.Background(), r, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	return ov
}

func mustRead(t testing.TB, ov *overlay.Overlay, p string) []byte {
	t.Helper()
	b, err := ov.ReadFile(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

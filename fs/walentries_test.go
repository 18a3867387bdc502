package fs

import (
	"context"
	"errors"
	"testing"

	"github.com/pgvault/pgvault/fs/fstest"
	"github.com/pgvault/pgvault/fs/overlay"
	"github.com/pgvault/pgvault/repo"
)

// TestWALEntriesAsked: the WAL view resolves names through the overlay's
// catalogue cache: a complete segment's entry is read from the repository
// once however often recovery asks, a missing history file once for a
// while; a .partial and a missing segment (and its .partial) are asked
// every time.
func TestWALEntriesAsked(t *testing.T) {
	ctx := context.Background()
	w := fstest.NewWAL(t)
	d := walView(t, w)
	const seg, part, missing, history = fstest.Segment, fstest.Partial, fstest.Missing, fstest.History

	for range 3 {
		if _, _, err := d.resolve(ctx, seg); err != nil {
			t.Fatal(err)
		}
		if _, _, err := d.resolve(ctx, part); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{missing, history} {
			if _, _, err := d.resolve(ctx, name); !errors.Is(err, repo.ErrWALNotFound) {
				t.Fatalf("%s: err = %v, want not found", name, err)
			}
		}
	}
	// The copy PostgreSQL made of the segment reads through the entry too.
	if _, err := d.ov.LoadWALFile(ctx, 1, seg); err != nil {
		t.Fatal(err)
	}
	w.Loads.Check(t, map[string]int{
		seg:               1,
		part + ".partial": 3,
		missing:           3, // and as many lookups of its .partial
		history:           1, // asked again only after a while (fs/overlay tests that)
	})
}

// walView is the WAL view of an overlay of w's snapshot, closed when the
// test ends.
func walView(t *testing.T, w *fstest.WAL) *walServeDir {
	ov := openTestOverlayWith(t, w.Repo, w.Snapshot, overlay.Options{Scratch: t.TempDir(), Now: w.Clock})
	t.Cleanup(func() { ov.Close(context.Background()) })
	return &walServeDir{ov: ov, segSize: 16 << 20, served: &servedSegments{}}
}

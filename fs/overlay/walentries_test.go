package overlay

import (
	"context"
	"errors"
	"testing"

	"github.com/pgvault/pgvault/fs/fstest"
	"github.com/pgvault/pgvault/repo"
)

// TestWALEntriesAsked: a complete segment's entry is read from the
// repository once however often recovery asks; a missing history file is
// asked again only after historyMissTTL; a .partial and a missing segment
// are asked every time.
func TestWALEntriesAsked(t *testing.T) {
	const seg, part, missing, history = fstest.Segment, fstest.Partial, fstest.Missing, fstest.History
	w := fstest.NewWAL(t)
	ctx := context.Background()
	ov := openTestOverlayWith(t, w.Repo, w.Snapshot, Options{Scratch: t.TempDir(), Now: w.Clock})
	defer ov.Close(ctx)
	// The entries the WAL view asks for, as it resolves each name: a
	// segment, else its .partial; a history file of timeline 2.
	ask := func(name string) error {
		tli := uint32(1)
		if name == history {
			tli = 2
		}
		_, err := ov.LoadWALFile(ctx, tli, name)
		if errors.Is(err, repo.ErrWALNotFound) && name != history {
			_, err = ov.LoadWALFile(ctx, tli, name+".partial")
		}
		return err
	}
	for range 3 {
		for _, name := range []string{seg, part} {
			if err := ask(name); err != nil {
				t.Fatal(err)
			}
		}
		for _, name := range []string{missing, history} {
			if err := ask(name); !errors.Is(err, repo.ErrWALNotFound) {
				t.Fatalf("%s: err = %v, want not found", name, err)
			}
		}
	}
	w.Now = w.Now.Add(historyMissTTL)
	if err := ask(history); !errors.Is(err, repo.ErrWALNotFound) {
		t.Fatal(err)
	}
	w.Loads.Check(t, map[string]int{
		seg:               1,
		part + ".partial": 3,
		missing:           3, // and as many lookups of its .partial
		history:           2,
	})
}

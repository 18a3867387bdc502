package stream

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// RepoPosition is how far the repository's WAL reaches: the end of the
// newest complete or partial segment of the newest timeline.
type RepoPosition struct {
	Timeline uint32
	LSN      pglogrepl.LSN // end of durable WAL; 0 when the repository has none
	Segment  string        // name of the newest stored segment (without .partial)
	Partial  bool          // the newest stored WAL is a .partial segment
}

// FindRepoPosition scans the WAL catalogue. Partial entries are loaded to
// learn their length; complete segments end at the segment boundary.
func FindRepoPosition(ctx context.Context, r *repo.Repository, segSize uint64) (RepoPosition, error) {
	entries, err := r.ListWAL(ctx)
	if err != nil {
		return RepoPosition{}, err
	}
	type cand struct {
		tli     uint32
		segNo   uint64
		partial bool
		name    string
	}
	var cands []cand
	for _, e := range entries {
		base, partial := strings.CutSuffix(e.Name, ".partial")
		if wal.Classify(base) != wal.KindSegment {
			continue
		}
		seg, err := wal.ParseSegment(base, segSize)
		if err != nil || seg.Timeline != e.Timeline {
			continue
		}
		cands = append(cands, cand{e.Timeline, seg.No, partial, base})
	}
	if len(cands) == 0 {
		return RepoPosition{}, nil
	}
	// Newest timeline first, then newest segment; a complete segment beats
	// a stale .partial of the same segment.
	slices.SortFunc(cands, func(a, b cand) int {
		if c := cmp.Or(cmp.Compare(b.tli, a.tli), cmp.Compare(b.segNo, a.segNo)); c != 0 {
			return c
		}
		switch {
		case !a.partial && b.partial:
			return -1
		case a.partial && !b.partial:
			return 1
		}
		return 0
	})
	best := cands[0]
	seg := wal.Segment{Timeline: best.tli, No: best.segNo}
	pos := RepoPosition{Timeline: best.tli, Segment: best.name, Partial: best.partial}
	if !best.partial {
		pos.LSN = seg.Next().Start(segSize)
		return pos, nil
	}
	wf, err := r.LoadWALFile(ctx, best.tli, best.name+".partial")
	if err != nil {
		return RepoPosition{}, fmt.Errorf("read newest partial segment: %w", err)
	}
	pos.LSN = seg.Start(segSize) + pglogrepl.LSN(wf.Size)
	return pos, nil
}

package stream

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// CheckOptions tune CheckGaps.
type CheckOptions struct {
	// StartTimeline and StartLSN are where the archive must begin: the
	// timeline and start LSN of the oldest base backup. StartTimeline 0
	// means "from the oldest WAL in the catalogue" (in the history of the
	// newest timeline).
	StartTimeline uint32
	StartLSN      pglogrepl.LSN
	// SegmentSize is used only when the catalogue holds no segment to read
	// it from; 0 means wal.DefaultSegmentSize.
	SegmentSize uint64
	// SelfContained says the start is a standalone backup's stop: the WAL
	// before it is in the backup, so until WAL after it is stored (a
	// streamer still filling its first segment) nothing is missing.
	SelfContained bool
}

// GapReport is CheckGaps' answer. Segment names in it are 24-hex names.
type GapReport struct {
	// OK is set when no segment and no history file is missing.
	OK bool `json:"ok"`
	// From and To are the first and last segment the check expected
	// (empty when there is nothing to check).
	From string `json:"from"`
	To   string `json:"to"`
	// Timeline is the newest timeline, the one whose history was followed.
	Timeline         uint32 `json:"timeline"`
	SegmentSize      uint64 `json:"segment_size"`
	StartTimeline    uint32 `json:"start_timeline"`
	StartLSN         string `json:"start_lsn"`
	SegmentsExpected uint64 `json:"segments_expected"`
	// Missing lists every expected segment that is not stored complete.
	Missing []string `json:"missing"`
	// MissingRanges are Missing as runs of consecutive segments.
	MissingRanges []wal.SegmentRange `json:"-"`
	// MissingHistory lists the timeline history files that the newest
	// timeline's history refers to (its own included) but that are not
	// stored.
	MissingHistory []string `json:"missing_history"`
	// Partial names the newest segment when it is stored only as
	// ".partial" (the segment being streamed): expected, not a gap.
	Partial string `json:"partial,omitempty"`
}

// CheckGaps lists the WAL missing from the repository's catalogue between
// a start (opts) and the newest segment stored, on the newest timeline and
// the ancestors its history file names: the segments recovery would read
// (wal.RequiredSegments, the switch segment from the child timeline). The
// newest segment may be stored only as ".partial". Timeline history files
// of the newest timeline and its ancestors must be stored. Entries whose
// names do not fit the segment size are ignored.
//
// The segment size is read from the long header of a stored segment. An
// error means the check could not run (the catalogue could not be listed,
// a history file is damaged, or the start is not in the history of the
// newest timeline); gaps are reported in the GapReport, not as errors.
func CheckGaps(ctx context.Context, r *repo.Repository, opts CheckOptions) (*GapReport, error) {
	entries, err := r.ListWAL(ctx)
	if err != nil {
		return nil, err
	}
	segSize, err := catalogueSegmentSize(ctx, r, entries)
	if err != nil {
		return nil, err
	}
	if segSize == 0 {
		segSize = opts.SegmentSize
	}
	if segSize == 0 {
		segSize = wal.DefaultSegmentSize
	}
	if !wal.ValidSegmentSize(segSize) {
		return nil, fmt.Errorf("check WAL: invalid segment size %d", segSize)
	}

	cat := newCatalogue(entries, segSize)
	rep := &GapReport{SegmentSize: segSize, Missing: []string{}, MissingHistory: []string{}}

	// The newest WAL: the highest timeline, then the highest segment.
	newest, haveWAL := cat.newest()
	switch {
	case !haveWAL && opts.StartTimeline == 0:
		rep.OK = true // nothing stored, nothing expected
		return rep, nil
	case !haveWAL:
		newest = wal.SegmentOf(opts.StartTimeline, opts.StartLSN, segSize)
	case opts.StartTimeline > newest.Timeline:
		// The start (a backup) is on a newer timeline than any WAL.
		newest = wal.SegmentOf(opts.StartTimeline, opts.StartLSN, segSize)
	}
	if opts.SelfContained && opts.StartTimeline != 0 {
		first := wal.SegmentOf(opts.StartTimeline, opts.StartLSN, segSize)
		if !haveWAL || (newest.Timeline == first.Timeline && newest.No < first.No) {
			rep.OK = true
			return rep, nil
		}
	}
	target := newest.Timeline
	rep.Timeline = target

	history, haveHistory, err := cat.loadHistory(ctx, r, target)
	if err != nil {
		return nil, err
	}
	var ranges []wal.SegmentRange
	if haveHistory {
		lineage, err := wal.Ancestors(history, target)
		if err != nil {
			return nil, fmt.Errorf("timeline history of %d: %w", target, err)
		}
		for _, tr := range lineage {
			if tr.Timeline > 1 && tr.Timeline != target && !cat.history[tr.Timeline] {
				rep.MissingHistory = append(rep.MissingHistory, wal.HistoryFileName(tr.Timeline))
			}
		}
		startTLI, start := opts.StartTimeline, opts.StartLSN
		if startTLI == 0 {
			startTLI, start = cat.oldestIn(lineage, segSize)
		}
		stop := newest.Start(segSize)
		if stop < start {
			stop = start
		}
		ranges, err = wal.RequiredSegments(history, target, startTLI, start, stop, segSize)
		if err != nil {
			return nil, fmt.Errorf("check WAL from %s on timeline %d to timeline %d: %w", start, startTLI, target, err)
		}
		rep.StartTimeline, rep.StartLSN = startTLI, start.String()
	} else {
		// The newest timeline's history file is missing: its ancestry is
		// unknown. Check the start's timeline and the newest one each on
		// their own, as far as stored WAL reaches.
		rep.MissingHistory = append(rep.MissingHistory, wal.HistoryFileName(target))
		startTLI, start := opts.StartTimeline, opts.StartLSN
		if startTLI == 0 {
			first, _ := cat.span(target)
			startTLI, start = target, first.Start(segSize)
		}
		rep.StartTimeline, rep.StartLSN = startTLI, start.String()
		first := wal.SegmentNo(start, segSize)
		if startTLI != target {
			_, last := cat.span(startTLI)
			if last.No >= first {
				ranges = append(ranges, wal.SegmentRange{Timeline: startTLI, First: first, Last: last.No})
			} else {
				ranges = append(ranges, wal.SegmentRange{Timeline: startTLI, First: first, Last: first})
			}
			f, _ := cat.span(target)
			first = f.No
		}
		if newest.No >= first {
			ranges = append(ranges, wal.SegmentRange{Timeline: target, First: first, Last: newest.No})
		}
	}

	for _, rg := range ranges {
		for _, s := range rg.Segments() {
			rep.SegmentsExpected++
			if rep.From == "" {
				rep.From = s.Name(segSize)
			}
			rep.To = s.Name(segSize)
			if cat.complete[s] {
				continue
			}
			if s == newest && cat.partial[s] {
				rep.Partial = s.Name(segSize)
				continue
			}
			rep.Missing = append(rep.Missing, s.Name(segSize))
			if n := len(rep.MissingRanges); n > 0 && rep.MissingRanges[n-1].Timeline == s.Timeline && rep.MissingRanges[n-1].Last+1 == s.No {
				rep.MissingRanges[n-1].Last = s.No
			} else {
				rep.MissingRanges = append(rep.MissingRanges, wal.SegmentRange{Timeline: s.Timeline, First: s.No, Last: s.No})
			}
		}
	}
	slices.Sort(rep.MissingHistory)
	rep.OK = len(rep.Missing) == 0 && len(rep.MissingHistory) == 0
	return rep, nil
}

// catalogue is the WAL catalogue's listing, parsed for one segment size.
type catalogue struct {
	complete map[wal.Segment]bool
	partial  map[wal.Segment]bool
	history  map[uint32]bool
}

func newCatalogue(entries []repo.WALEntry, segSize uint64) *catalogue {
	c := &catalogue{complete: map[wal.Segment]bool{}, partial: map[wal.Segment]bool{}, history: map[uint32]bool{}}
	for _, e := range entries {
		f, err := wal.ParseFileName(e.Name, segSize)
		if err != nil || f.Timeline != e.Timeline {
			continue
		}
		switch f.Kind {
		case wal.KindSegment:
			c.complete[f.Segment()] = true
		case wal.KindPartial:
			c.partial[f.Segment()] = true
		case wal.KindHistory:
			c.history[f.Timeline] = true
		}
	}
	return c
}

// newest is the stored segment (complete or partial) on the highest
// timeline with the highest number.
func (c *catalogue) newest() (wal.Segment, bool) {
	var best wal.Segment
	found := false
	for _, m := range []map[wal.Segment]bool{c.complete, c.partial} {
		for s := range m {
			if !found || s.Timeline > best.Timeline || s.Timeline == best.Timeline && s.No > best.No {
				best, found = s, true
			}
		}
	}
	return best, found
}

// span is the lowest and highest stored segment (complete or partial) of
// timeline tli; zero Segments when there is none.
func (c *catalogue) span(tli uint32) (first, last wal.Segment) {
	found := false
	for _, m := range []map[wal.Segment]bool{c.complete, c.partial} {
		for s := range m {
			if s.Timeline != tli {
				continue
			}
			if !found || s.No < first.No {
				first = s
			}
			if !found || s.No > last.No {
				last = s
			}
			found = true
		}
	}
	return first, last
}

// oldestIn finds the oldest stored WAL that lies in the history lineage
// describes: the lowest-numbered segment whose timeline's range overlaps
// it, and where in it that range begins.
func (c *catalogue) oldestIn(lineage []wal.TimelineRange, segSize uint64) (uint32, pglogrepl.LSN) {
	var (
		bestTLI uint32
		bestLSN pglogrepl.LSN
		found   bool
	)
	for _, m := range []map[wal.Segment]bool{c.complete, c.partial} {
		for s := range m {
			for _, tr := range lineage {
				if tr.Timeline != s.Timeline {
					continue
				}
				begin, end := s.Start(segSize), s.Start(segSize)+pglogrepl.LSN(segSize)
				if (!tr.Open() && tr.End <= begin) || tr.Begin >= end || (!tr.Open() && tr.Begin >= tr.End) {
					continue
				}
				lsn := max(begin, tr.Begin)
				if !found || lsn < bestLSN {
					bestTLI, bestLSN, found = s.Timeline, lsn, true
				}
			}
		}
	}
	if !found {
		// No stored WAL lies in the lineage (only the start of a newer
		// timeline): start at the newest timeline's beginning.
		last := lineage[len(lineage)-1]
		return last.Timeline, last.Begin
	}
	return bestTLI, bestLSN
}

// loadHistory returns the parsed history file of timeline tli: nil and ok
// for timeline 1 (it has no parents), ok false when the file is not stored.
func (c *catalogue) loadHistory(ctx context.Context, r *repo.Repository, tli uint32) ([]wal.HistoryEntry, bool, error) {
	if tli == 1 {
		return nil, true, nil
	}
	if !c.history[tli] {
		return nil, false, nil
	}
	name := wal.HistoryFileName(tli)
	data, _, err := r.LoadWAL(ctx, tli, name)
	if err != nil {
		return nil, false, fmt.Errorf("check WAL: %w", err)
	}
	h, err := wal.ParseHistory(data)
	if err != nil {
		return nil, false, fmt.Errorf("check WAL: stored %s: %w", name, err)
	}
	return h, true, nil
}

// catalogueSegmentSize reads the segment size from the long header of a
// stored segment (complete if there is one, else partial): only the first
// chunk is loaded. It returns 0 when the catalogue holds no segment.
func catalogueSegmentSize(ctx context.Context, r *repo.Repository, entries []repo.WALEntry) (uint64, error) {
	var pick *repo.WALEntry
	for i := range entries {
		e := &entries[i]
		k := wal.Classify(e.Name)
		if k == wal.KindSegment {
			pick = e
			break
		}
		if k == wal.KindPartial && pick == nil {
			pick = e
		}
	}
	if pick == nil {
		return 0, nil
	}
	wf, err := r.LoadWALFile(ctx, pick.Timeline, pick.Name)
	if err != nil {
		return 0, fmt.Errorf("check WAL: %w", err)
	}
	if !wf.Partial && wal.ValidSegmentSize(uint64(wf.Size)) {
		// A complete segment's size is the segment size: no content is
		// read, so a write-only key checks too.
		return uint64(wf.Size), nil
	}
	if len(wf.Chunks) == 0 {
		return 0, fmt.Errorf("check WAL: stored %s is empty", pick.Name)
	}
	first, err := r.LoadBlob(ctx, wf.Chunks[0].ID)
	if err != nil {
		return 0, fmt.Errorf("check WAL: read %s: %w", pick.Name, err)
	}
	segSize, err := wal.SegmentSizeOf(pick.Name, first)
	if err != nil {
		return 0, fmt.Errorf("check WAL: stored %w", err)
	}
	return segSize, nil
}

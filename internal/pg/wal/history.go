package wal

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
)

// ErrInvalidHistory is wrapped by every error about the content of a
// timeline history file, or about a history that does not fit its timeline.
var ErrInvalidHistory = errors.New("invalid timeline history")

// HistoryEntry is one line of a timeline history file: timeline Timeline
// ended, and its child began, at SwitchLSN.
type HistoryEntry struct {
	Timeline  uint32        // the parent timeline
	SwitchLSN pglogrepl.LSN // where the parent's WAL stops belonging to this history
	Reason    string        // free text, e.g. "no recovery target specified"
}

// ParseHistory parses the content of a timeline history file
// ("TTTTTTTT.history"), one entry per line, oldest first, as
// readTimeLineHistory does: blank lines and lines whose first non-blank
// character is '#' are ignored; every other line is
// "parentTLI<TAB>switchpoint<TAB>reason" (any run of blanks separates the
// fields); parent timelines must increase strictly.
//
// Like PostgreSQL, it does not require switch points to increase: a server
// that ends recovery on an ancestor timeline before the target timeline's own
// switch point (recovery_target_lsn earlier than the fork) writes a line
// whose switch point is below the previous one, and that history is valid
// (TimelineOf and Ancestors resolve it as PostgreSQL does). It is stricter
// than PostgreSQL in rejecting timeline 0, a 0/0 switch point, and numbers
// out of range.
//
// An empty file (or only comments) gives no entries: a timeline without
// parents.
func ParseHistory(data []byte) ([]HistoryEntry, error) {
	var out []HistoryEntry
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		text := strings.TrimRight(string(line), "\r")
		rest := strings.TrimLeft(text, " \t\v\f\r")
		if rest == "" || rest[0] == '#' {
			continue
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("%w: line %d %q: %s", ErrInvalidHistory, lineNo, clip(text), fmt.Sprintf(format, args...))
		}

		tliText, rest := nextField(rest)
		tli, err := strconv.ParseUint(tliText, 10, 32)
		if err != nil {
			return nil, fail("expected a numeric timeline ID")
		}
		if tli == 0 {
			return nil, fail("timeline 0 does not exist")
		}
		lsnText, rest := nextField(rest)
		lsn, ok := parseLSNStrict(lsnText)
		if !ok {
			return nil, fail("expected a write-ahead log switchpoint location (like 0/3000000)")
		}
		if lsn == 0 {
			return nil, fail("switch point 0/0 is not a WAL location")
		}
		if n := len(out); n > 0 && uint32(tli) <= out[n-1].Timeline {
			return nil, fail("timeline IDs must be in increasing sequence (%d follows %d)", tli, out[n-1].Timeline)
		}
		out = append(out, HistoryEntry{Timeline: uint32(tli), SwitchLSN: lsn, Reason: rest})
	}
	return out, nil
}

// FormatHistory renders entries as PostgreSQL writes a history file
// (writeTimeLineHistory): "parentTLI\tswitchpoint\treason\n" per entry.
// Reasons are written as they are; a reason holding a newline would not
// read back.
func FormatHistory(entries []HistoryEntry) []byte {
	var b bytes.Buffer
	for _, e := range entries {
		fmt.Fprintf(&b, "%d\t%s\t%s\n", e.Timeline, e.SwitchLSN, e.Reason)
	}
	return b.Bytes()
}

// nextField splits s at its first run of blanks: the field before, and what
// follows the blanks.
func nextField(s string) (field, rest string) {
	i := strings.IndexAny(s, " \t\v\f\r")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimLeft(s[i:], " \t\v\f\r")
}

// parseLSNStrict accepts exactly "H/H" with 1 to 8 hex digits on each side
// (either case, as PostgreSQL's %X/%X does) and converts it with
// pglogrepl.ParseLSN, which by itself tolerates trailing text and overflow.
func parseLSNStrict(s string) (pglogrepl.LSN, bool) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || !isHex(hi) || !isHex(lo) || len(hi) > 8 || len(lo) > 8 {
		return 0, false
	}
	lsn, err := pglogrepl.ParseLSN(s)
	return lsn, err == nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
			return false
		}
	}
	return s != ""
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// TimelineRange is the stretch of WAL, [Begin, End), that timeline Timeline
// contributes to a history. Begin is 0 for the oldest timeline; End is 0 for
// the target timeline, whose WAL has no end yet. A range with Begin == End
// (End != 0) holds no WAL of this history.
type TimelineRange struct {
	Timeline uint32
	Begin    pglogrepl.LSN
	End      pglogrepl.LSN
}

// Contains reports whether lsn lies in the range.
func (r TimelineRange) Contains(lsn pglogrepl.LSN) bool {
	return lsn >= r.Begin && (r.End == 0 || lsn < r.End)
}

// Open reports whether the range has no end (it is the target timeline).
func (r TimelineRange) Open() bool { return r.End == 0 }

// checkHistory checks what readTimeLineHistory checks once the target
// timeline is known, plus what ParseHistory checks, for histories built by
// hand.
func checkHistory(history []HistoryEntry, targetTLI uint32) error {
	if targetTLI == 0 {
		return fmt.Errorf("%w: timeline 0 does not exist", ErrInvalidHistory)
	}
	var last uint32
	for i, e := range history {
		if e.Timeline == 0 || (i > 0 && e.Timeline <= last) {
			return fmt.Errorf("%w: entry %d: timeline IDs must be in increasing sequence, starting at 1 (%d follows %d)", ErrInvalidHistory, i+1, e.Timeline, last)
		}
		if e.SwitchLSN == 0 {
			return fmt.Errorf("%w: entry %d: switch point 0/0 is not a WAL location", ErrInvalidHistory, i+1)
		}
		last = e.Timeline
	}
	if len(history) > 0 && targetTLI <= last {
		return fmt.Errorf("%w of timeline %d: timeline IDs in it must be less than %d, found %d", ErrInvalidHistory, targetTLI, targetTLI, last)
	}
	return nil
}

// TimelineOf says which timeline holds lsn in the history of timeline
// targetTLI, where history is the content of targetTLI's history file
// (nil for a timeline without parents). It follows tliOfPointInHistory: the
// newest timeline whose range contains lsn wins, so an LSN equal to a switch
// point belongs to the child.
func TimelineOf(history []HistoryEntry, targetTLI uint32, lsn pglogrepl.LSN) (uint32, error) {
	if err := checkHistory(history, targetTLI); err != nil {
		return 0, err
	}
	if len(history) == 0 || lsn >= history[len(history)-1].SwitchLSN {
		return targetTLI, nil
	}
	for i := len(history) - 1; i >= 0; i-- {
		var begin pglogrepl.LSN
		if i > 0 {
			begin = history[i-1].SwitchLSN
		}
		if begin <= lsn && lsn < history[i].SwitchLSN {
			return history[i].Timeline, nil
		}
	}
	// Unreachable: the ranges start at 0 and chain up to the last switch
	// point, so one of them holds any lsn below it.
	return 0, fmt.Errorf("%w: no timeline of the history of %d holds %s", ErrInvalidHistory, targetTLI, lsn)
}

// Ancestors lists the timelines whose WAL makes up the history of timeline
// targetTLI, oldest first, ending with targetTLI itself (an open range).
// history is the content of targetTLI's history file (nil for a timeline
// without parents).
//
// The ranges do not overlap and together cover every LSN. They are the
// ranges PostgreSQL's history entries describe, except that where a later
// switch point lies below an earlier one (see ParseHistory) the newer
// timeline takes precedence, as in TimelineOf; a timeline left with no WAL
// gets an empty range (Begin == End) rather than disappearing.
func Ancestors(history []HistoryEntry, targetTLI uint32) ([]TimelineRange, error) {
	if err := checkHistory(history, targetTLI); err != nil {
		return nil, err
	}
	n := len(history)
	out := make([]TimelineRange, n+1)
	var floor pglogrepl.LSN
	if n > 0 {
		floor = history[n-1].SwitchLSN
	}
	out[n] = TimelineRange{Timeline: targetTLI, Begin: floor}
	for i := n - 1; i >= 0; i-- {
		var begin pglogrepl.LSN
		if i > 0 {
			begin = history[i-1].SwitchLSN
		}
		end := min(history[i].SwitchLSN, floor)
		begin = min(begin, end)
		out[i] = TimelineRange{Timeline: history[i].Timeline, Begin: begin, End: end}
		floor = begin
	}
	return out, nil
}

// SegmentRange is a run of consecutive segments on one timeline, First to
// Last inclusive.
type SegmentRange struct {
	Timeline    uint32
	First, Last uint64
}

// Len is the number of segments in the range.
func (r SegmentRange) Len() uint64 { return r.Last - r.First + 1 }

// Segments lists the range's segments.
func (r SegmentRange) Segments() []Segment {
	out := make([]Segment, 0, r.Len())
	for no := r.First; ; no++ {
		out = append(out, Segment{Timeline: r.Timeline, No: no})
		if no == r.Last {
			return out
		}
	}
}

// RequiredSegments lists the segment files that recovery towards timeline
// targetTLI reads to replay WAL from start (e.g. a base backup's start LSN,
// on timeline startTLI) up to and including the segment holding stop (e.g. a
// recovery_target_lsn; pass a record's end LSN minus one to stop before a
// boundary). history is the content of targetTLI's history file. The result
// is in LSN order, one run per timeline.
//
// For each segment number it names the newest timeline of the history that
// begins in or before that segment, as XLogFileReadAnyTLI prefers: the
// segment in which a timeline switch happens is read from the child
// timeline, whose copy of it starts with the parent's WAL. (PostgreSQL falls
// back to an older timeline's file when that one is missing; a plan built
// from this list does not need it to.)
//
// It fails if startTLI does not hold start in targetTLI's history: WAL from a
// timeline that forked off before start cannot lead to targetTLI
// ("requested timeline is not a child of this server's history"). Recovery
// also needs the history files of targetTLI; they are not listed.
func RequiredSegments(history []HistoryEntry, targetTLI, startTLI uint32, start, stop pglogrepl.LSN, segSize uint64) ([]SegmentRange, error) {
	if err := checkSegmentSize(segSize); err != nil {
		return nil, err
	}
	if stop < start {
		return nil, fmt.Errorf("WAL range from %s to %s ends before it starts", start, stop)
	}
	ranges, err := Ancestors(history, targetTLI)
	if err != nil {
		return nil, err
	}
	tli, _ := TimelineOf(history, targetTLI, start)
	if tli != startTLI {
		return nil, fmt.Errorf("timeline %d is not in the history of timeline %d at %s: that WAL belongs to timeline %d there",
			startTLI, targetTLI, start, tli)
	}
	// Non-empty ranges, newest first, with the segment each begins in.
	type cand struct {
		tli      uint32
		beginSeg uint64
	}
	var cands []cand
	for i := len(ranges) - 1; i >= 0; i-- {
		r := ranges[i]
		if !r.Open() && r.Begin >= r.End {
			continue
		}
		cands = append(cands, cand{r.Timeline, uint64(r.Begin) / segSize})
	}
	first, last := uint64(start)/segSize, uint64(stop)/segSize
	var out []SegmentRange
	// Walk the timelines oldest to newest: each owns the segments from where
	// it begins up to where the next newer one begins.
	for i := len(cands) - 1; i >= 0 && first <= last; i-- {
		lo := max(cands[i].beginSeg, first)
		hi := last
		if i > 0 {
			if cands[i-1].beginSeg == 0 {
				continue // a newer timeline owns everything from segment 0
			}
			hi = min(hi, cands[i-1].beginSeg-1)
		}
		if lo > hi {
			continue
		}
		out = append(out, SegmentRange{Timeline: cands[i].tli, First: lo, Last: hi})
		first = hi + 1
		if hi == last {
			break
		}
	}
	return out, nil
}

package wal_test

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
)

func entry(t testing.TB, tli uint32, switchLSN, reason string) wal.HistoryEntry {
	return wal.HistoryEntry{Timeline: tli, SwitchLSN: lsn(t, switchLSN), Reason: reason}
}

func TestParseHistory(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		want []wal.HistoryEntry
		err  string
	}{
		{"empty", "", nil, ""},
		{"only comments", "# comment\n\n   \n\t# indented comment\n", nil, ""},
		{"one", "1\t0/B000A0\tno recovery target specified\n", []wal.HistoryEntry{entry(t, 1, "0/B000A0", "no recovery target specified")}, ""},
		{"no final newline", "1\t0/B000A0\tno recovery target specified", []wal.HistoryEntry{entry(t, 1, "0/B000A0", "no recovery target specified")}, ""},
		{"no reason", "1\t0/B000A0\n", []wal.HistoryEntry{entry(t, 1, "0/B000A0", "")}, ""},
		{"crlf", "1\t0/B000A0\tbefore 2024-01-01\r\n2\t1/0\tx\r\n", []wal.HistoryEntry{entry(t, 1, "0/B000A0", "before 2024-01-01"), entry(t, 2, "1/0", "x")}, ""},
		{"spaces and tabs, lower-case hex", "  1   0/b000a0 \t at restore point \"x\"\n", []wal.HistoryEntry{entry(t, 1, "0/B000A0", "at restore point \"x\"")}, ""},
		{"gaps in timelines", "1\t0/3000000\ta\n\n# c\n5\t0/5000000\tb\n", []wal.HistoryEntry{entry(t, 1, "0/3000000", "a"), entry(t, 5, "0/5000000", "b")}, ""},
		{"reason with tabs", "1\t0/1\tafter\ttab\n", []wal.HistoryEntry{entry(t, 1, "0/1", "after\ttab")}, ""},
		// PostgreSQL writes this (testdata/pg15-timeline3): the second switch
		// point is lower than the first.
		{"decreasing switch points", "1\t0/1A0000A0\tno recovery target specified\n\n2\t0/6DB5210\tafter LSN 0/6DB51E0\n",
			[]wal.HistoryEntry{entry(t, 1, "0/1A0000A0", "no recovery target specified"), entry(t, 2, "0/6DB5210", "after LSN 0/6DB51E0")}, ""},
		{"max values", "4294967295\tFFFFFFFF/FFFFFFFF\tr\n", []wal.HistoryEntry{entry(t, 4294967295, "FFFFFFFF/FFFFFFFF", "r")}, ""},

		{"text", "one\t0/1\tr\n", nil, `line 1 "one\t0/1\tr": expected a numeric timeline ID`},
		{"negative", "-1\t0/1\tr\n", nil, "expected a numeric timeline ID"},
		{"plus", "+1\t0/1\tr\n", nil, "expected a numeric timeline ID"},
		{"tli overflow", "4294967296\t0/1\tr\n", nil, "expected a numeric timeline ID"},
		{"glued", "10/1\tr\n", nil, "expected a numeric timeline ID"},
		{"tli 0", "0\t0/1\tr\n", nil, "timeline 0 does not exist"},
		{"no lsn", "1\n", nil, "expected a write-ahead log switchpoint location"},
		{"bad lsn", "1\t0-1\tr\n", nil, "switchpoint"},
		{"lsn 0x", "1\t0x0/1\tr\n", nil, "switchpoint"},
		{"lsn high overflow", "1\t100000000/0\tr\n", nil, "switchpoint"},
		{"lsn low overflow", "1\t0/100000000\tr\n", nil, "switchpoint"},
		{"lsn three parts", "1\t0/1/2\tr\n", nil, "switchpoint"},
		{"lsn empty half", "1\t/1\tr\n", nil, "switchpoint"},
		{"lsn 0/0", "1\t0/0\tr\n", nil, "switch point 0/0"},
		{"same tli twice", "1\t0/1\ta\n1\t0/2\tb\n", nil, `line 2 "1\t0/2\tb": timeline IDs must be in increasing sequence (1 follows 1)`},
		{"decreasing tli", "2\t0/1\ta\n\n1\t0/2\tb\n", nil, "line 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := wal.ParseHistory([]byte(tc.data))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v, want one containing %q", err, tc.err)
				}
				if !errors.Is(err, wal.ErrInvalidHistory) {
					t.Errorf("error %v does not match ErrInvalidHistory", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			again, err := wal.ParseHistory(wal.FormatHistory(got))
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Errorf("FormatHistory round trip: %+v, %v", again, err)
			}
		})
	}
}

func TestFormatHistory(t *testing.T) {
	got := string(wal.FormatHistory([]wal.HistoryEntry{entry(t, 1, "0/B000A0", "no recovery target specified"), entry(t, 2, "1/2", "")}))
	want := "1\t0/B000A0\tno recovery target specified\n2\t1/2\t\n"
	if got != want {
		t.Errorf("FormatHistory = %q, want %q", got, want)
	}
}

// Histories used below. Timeline 4's history is a plain chain; timeline 3's
// is what PostgreSQL 15 wrote in testdata/pg15-timeline3.
func chain(t testing.TB) []wal.HistoryEntry {
	return []wal.HistoryEntry{
		entry(t, 1, "0/3000100", "a"),
		entry(t, 2, "0/5000000", "b"),
		entry(t, 3, "0/5000200", "c"),
	}
}

func anomalous(t testing.TB) []wal.HistoryEntry {
	return []wal.HistoryEntry{
		entry(t, 1, "0/1A0000A0", "no recovery target specified"),
		entry(t, 2, "0/6DB5210", "after LSN 0/6DB51E0"),
	}
}

func TestTimelineOf(t *testing.T) {
	for _, tc := range []struct {
		name    string
		history []wal.HistoryEntry
		target  uint32
		lsn     string
		want    uint32
		err     string
	}{
		{"no history", nil, 1, "5/0", 1, ""},
		{"no history, later timeline", nil, 7, "0/0", 7, ""},
		{"first", chain(t), 4, "0/0", 1, ""},
		{"before first switch", chain(t), 4, "0/30000FF", 1, ""},
		{"at first switch", chain(t), 4, "0/3000100", 2, ""},
		{"inside second", chain(t), 4, "0/4FFFFFF", 2, ""},
		{"at second switch", chain(t), 4, "0/5000000", 3, ""},
		{"at last switch", chain(t), 4, "0/5000200", 4, ""},
		{"far ahead", chain(t), 4, "FF/0", 4, ""},
		// Timeline 2 never holds WAL in timeline 3's history: PostgreSQL's
		// newest-first search gives 3 from 0/6DB5210 on.
		{"anomalous, before", anomalous(t), 3, "0/6DB520F", 1, ""},
		{"anomalous, at", anomalous(t), 3, "0/6DB5210", 3, ""},
		{"anomalous, between", anomalous(t), 3, "0/10000000", 3, ""},
		{"anomalous, after", anomalous(t), 3, "0/1A0000A0", 3, ""},
		{"target not newer", chain(t), 3, "0/0", 0, "invalid timeline history of timeline 3: timeline IDs in it must be less than 3, found 3"},
		{"target 0", nil, 0, "0/0", 0, "timeline 0"},
		{"unsorted", []wal.HistoryEntry{entry(t, 2, "0/1", ""), entry(t, 1, "0/2", "")}, 3, "0/0", 0, "increasing sequence"},
		{"zero switch", []wal.HistoryEntry{{Timeline: 1}}, 3, "0/0", 0, "switch point 0/0"},
	} {
		got, err := wal.TimelineOf(tc.history, tc.target, lsn(t, tc.lsn))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, wal.ErrInvalidHistory) {
				t.Errorf("%s: error = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: TimelineOf(%s) = %d, %v; want %d", tc.name, tc.lsn, got, err, tc.want)
		}
	}
}

func TestAncestors(t *testing.T) {
	r := func(tli uint32, begin, end string) wal.TimelineRange {
		return wal.TimelineRange{Timeline: tli, Begin: lsn(t, begin), End: lsn(t, end)}
	}
	for _, tc := range []struct {
		name    string
		history []wal.HistoryEntry
		target  uint32
		want    []wal.TimelineRange
	}{
		{"no history", nil, 1, []wal.TimelineRange{r(1, "0/0", "0/0")}},
		{"chain", chain(t), 4, []wal.TimelineRange{
			r(1, "0/0", "0/3000100"), r(2, "0/3000100", "0/5000000"), r(3, "0/5000000", "0/5000200"), r(4, "0/5000200", "0/0"),
		}},
		{"anomalous", anomalous(t), 3, []wal.TimelineRange{
			r(1, "0/0", "0/6DB5210"), r(2, "0/6DB5210", "0/6DB5210"), r(3, "0/6DB5210", "0/0"),
		}},
		{"equal switch points", []wal.HistoryEntry{entry(t, 1, "0/100", ""), entry(t, 2, "0/100", "")}, 3, []wal.TimelineRange{
			r(1, "0/0", "0/100"), r(2, "0/100", "0/100"), r(3, "0/100", "0/0"),
		}},
	} {
		got, err := wal.Ancestors(tc.history, tc.target)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: Ancestors = %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
		if len(got) == 0 || !got[len(got)-1].Open() {
			t.Errorf("%s: the last range is not the open target: %+v", tc.name, got)
		}
	}
	if _, err := wal.Ancestors(chain(t), 2); !errors.Is(err, wal.ErrInvalidHistory) {
		t.Errorf("Ancestors with a target older than its history: %v", err)
	}
}

// TestAncestorsAgreeWithTimelineOf checks, for LSNs around every switch
// point, that the one range of Ancestors holding an LSN is TimelineOf's.
func TestAncestorsAgreeWithTimelineOf(t *testing.T) {
	for _, h := range [][]wal.HistoryEntry{nil, chain(t), anomalous(t)} {
		target := uint32(1)
		if len(h) > 0 {
			target = h[len(h)-1].Timeline + 1
		}
		checkAgreement(t, h, target, probes(h))
	}
}

func probes(h []wal.HistoryEntry) []pglogrepl.LSN {
	out := []pglogrepl.LSN{0, 1, ^pglogrepl.LSN(0)}
	for _, e := range h {
		out = append(out, e.SwitchLSN-1, e.SwitchLSN, e.SwitchLSN+1)
	}
	return out
}

func checkAgreement(t testing.TB, h []wal.HistoryEntry, target uint32, lsns []pglogrepl.LSN) {
	t.Helper()
	ranges, err := wal.Ancestors(h, target)
	if err != nil {
		t.Fatalf("Ancestors(%+v, %d): %v", h, target, err)
	}
	for _, l := range lsns {
		tli, err := wal.TimelineOf(h, target, l)
		if err != nil {
			t.Fatalf("TimelineOf(%+v, %d, %s): %v", h, target, l, err)
		}
		var holders []uint32
		for _, r := range ranges {
			if r.Contains(l) && (r.Open() || r.Begin < r.End) {
				holders = append(holders, r.Timeline)
			}
		}
		if len(holders) != 1 || holders[0] != tli {
			t.Fatalf("history %+v target %d: %s is in ranges of %v, TimelineOf says %d (ranges %+v)", h, target, l, holders, tli, ranges)
		}
	}
}

func TestRequiredSegments(t *testing.T) {
	sr := func(tli uint32, first, last uint64) wal.SegmentRange {
		return wal.SegmentRange{Timeline: tli, First: first, Last: last}
	}
	for _, tc := range []struct {
		name        string
		history     []wal.HistoryEntry
		target      uint32
		startTLI    uint32
		start, stop string
		segSize     uint64
		want        []wal.SegmentRange
		err         string
	}{
		{"one timeline", nil, 1, 1, "0/2000028", "0/5000000", 16 * mib, []wal.SegmentRange{sr(1, 2, 5)}, ""},
		{"one segment", nil, 1, 1, "0/2000028", "0/2000100", 16 * mib, []wal.SegmentRange{sr(1, 2, 2)}, ""},
		{"start equals stop", nil, 1, 1, "0/2000028", "0/2000028", 16 * mib, []wal.SegmentRange{sr(1, 2, 2)}, ""},
		{"1 MiB segments", nil, 1, 1, "0/800028", "0/B000A0", mib, []wal.SegmentRange{sr(1, 8, 11)}, ""},
		// The switch to 2 happens inside segment 3: PostgreSQL reads
		// segment 3 from timeline 2, whose copy starts with timeline 1's WAL.
		{"across switches", chain(t), 4, 1, "0/1000028", "0/7000000", 16 * mib,
			[]wal.SegmentRange{sr(1, 1, 2), sr(2, 3, 4), sr(4, 5, 7)}, ""},
		{"start in the switch segment", chain(t), 4, 1, "0/3000028", "0/3000200", 16 * mib, []wal.SegmentRange{sr(2, 3, 3)}, ""},
		{"start on a later timeline", chain(t), 4, 2, "0/4000000", "0/6000000", 16 * mib, []wal.SegmentRange{sr(2, 4, 4), sr(4, 5, 6)}, ""},
		{"stop before target begins", chain(t), 4, 1, "0/1000000", "0/2FFFFFF", 16 * mib, []wal.SegmentRange{sr(1, 1, 2)}, ""},
		{"1 GiB segments", chain(t), 4, 1, "0/0", "1/0", gib, []wal.SegmentRange{sr(4, 0, 4)}, ""},
		{"switch at a segment boundary", []wal.HistoryEntry{entry(t, 1, "0/5000000", "")}, 2, 1, "0/3000028", "0/6000000", 16 * mib,
			[]wal.SegmentRange{sr(1, 3, 4), sr(2, 5, 6)}, ""},
		{"anomalous history", anomalous(t), 3, 1, "0/2000028", "0/1B000000", 16 * mib, []wal.SegmentRange{sr(1, 2, 5), sr(3, 6, 0x1B)}, ""},

		{"start on a diverged timeline", chain(t), 4, 1, "0/4000000", "0/6000000", 16 * mib, nil,
			"timeline 1 is not in the history of timeline 4 at 0/4000000: that WAL belongs to timeline 2 there"},
		{"backwards", nil, 1, 1, "0/5000000", "0/4000000", 16 * mib, nil, "ends before it starts"},
		{"bad size", nil, 1, 1, "0/0", "0/0", 0, nil, "invalid WAL segment size"},
		{"bad history", chain(t), 2, 1, "0/0", "0/0", 16 * mib, nil, "invalid timeline history"},
	} {
		got, err := wal.RequiredSegments(tc.history, tc.target, tc.startTLI, lsn(t, tc.start), lsn(t, tc.stop), tc.segSize)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: RequiredSegments = %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

func TestSegmentRange(t *testing.T) {
	r := wal.SegmentRange{Timeline: 2, First: 0xFF, Last: 0x101}
	if r.Len() != 3 {
		t.Errorf("Len = %d", r.Len())
	}
	var names []string
	for _, s := range r.Segments() {
		names = append(names, s.Name(16*mib))
	}
	want := []string{"0000000200000000000000FF", "000000020000000100000000", "000000020000000100000001"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("Segments = %v, want %v", names, want)
	}
}

// TestRealHistories parses the history files PostgreSQL 15 wrote, see
// testdata/README.md.
func TestRealHistories(t *testing.T) {
	for _, tc := range []struct {
		path   string
		target uint32
		want   []wal.HistoryEntry
	}{
		{"testdata/pg15-1mib/00000002.history", 2, []wal.HistoryEntry{entry(t, 1, "0/B000A0", "no recovery target specified")}},
		{"testdata/pg15-timeline3/00000002.history", 2, []wal.HistoryEntry{entry(t, 1, "0/1A0000A0", "no recovery target specified")}},
		{"testdata/pg15-timeline3/00000003.history", 3, anomalous(t)},
	} {
		data, err := os.ReadFile(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := wal.ParseHistory(data)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v, %v; want %+v", tc.path, got, err, tc.want)
		}
		checkAgreement(t, got, tc.target, probes(got))
	}
}

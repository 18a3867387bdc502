package stream_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/repotest"
	"github.com/pgvault/pgvault/stream"
)

// archived describes catalogue content for gap tests.
type archived struct {
	segs     map[uint32][2]uint64 // timeline -> first, last complete segment (1 MiB)
	skip     []wal.Segment        // complete segments left out of those runs
	partials []wal.Segment
	history  map[uint32]string // timeline -> history file content
}

func (a archived) store(t *testing.T, r *repo.Repository) {
	t.Helper()
	skipped := map[wal.Segment]bool{}
	for _, s := range a.skip {
		skipped[s] = true
	}
	for tli, run := range a.segs {
		for no := run[0]; no <= run[1]; no++ {
			if skipped[wal.Segment{Timeline: tli, No: no}] {
				continue
			}
			name, data := seg(tli, no, mib)
			mustSave(t, r, name, data)
		}
	}
	for _, p := range a.partials {
		name, data := seg(p.Timeline, p.No, mib)
		mustSave(t, r, name+".partial", data[:3*wal.PageSize])
	}
	for tli, h := range a.history {
		mustSave(t, r, wal.HistoryFileName(tli), []byte(h))
	}
}

func s1(no uint64) wal.Segment { return wal.Segment{Timeline: 1, No: no} }

func TestCheckGaps(t *testing.T) {
	ctx := context.Background()
	lsn := func(s string) pglogrepl.LSN {
		l, err := pglogrepl.ParseLSN(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	names := func(ss ...wal.Segment) []string {
		out := []string{}
		for _, s := range ss {
			out = append(out, s.Name(mib))
		}
		return out
	}
	const fork4 = "1\t0/400100\tno recovery target specified\n" // timeline 2 forks inside segment 4
	tests := []struct {
		name     string
		a        archived
		opts     stream.CheckOptions
		ok       bool
		from, to string
		tli      uint32
		expected uint64
		missing  []string
		history  []string
		partial  string
		ranges   int
	}{
		{name: "empty", ok: true, missing: []string{}},
		{name: "contiguous", a: archived{segs: map[uint32][2]uint64{1: {1, 5}}},
			ok: true, from: segName(1, 1), to: segName(1, 5), tli: 1, expected: 5, missing: []string{}},
		{name: "one hole", a: archived{segs: map[uint32][2]uint64{1: {1, 6}}, skip: []wal.Segment{s1(3)}},
			from: segName(1, 1), to: segName(1, 6), tli: 1, expected: 6, missing: names(s1(3)), ranges: 1},
		{name: "two holes, one run of two", a: archived{segs: map[uint32][2]uint64{1: {1, 9}}, skip: []wal.Segment{s1(3), s1(4), s1(7)}},
			from: segName(1, 1), to: segName(1, 9), tli: 1, expected: 9, missing: names(s1(3), s1(4), s1(7)), ranges: 2},
		{name: "newest only partial is not a gap", a: archived{segs: map[uint32][2]uint64{1: {1, 4}}, partials: []wal.Segment{s1(5)}},
			ok: true, from: segName(1, 1), to: segName(1, 5), tli: 1, expected: 5, missing: []string{}, partial: segName(1, 5)},
		{name: "a partial before the newest is a gap", a: archived{segs: map[uint32][2]uint64{1: {1, 6}}, skip: []wal.Segment{s1(4)}, partials: []wal.Segment{s1(4)}},
			from: segName(1, 1), to: segName(1, 6), tli: 1, expected: 6, missing: names(s1(4)), ranges: 1},
		{name: "from a backup", a: archived{segs: map[uint32][2]uint64{1: {1, 6}}, skip: []wal.Segment{s1(1)}},
			opts: stream.CheckOptions{StartTimeline: 1, StartLSN: lsn("0/200028")},
			ok:   true, from: segName(1, 2), to: segName(1, 6), tli: 1, expected: 5, missing: []string{}},
		{name: "backup start missing", a: archived{segs: map[uint32][2]uint64{1: {3, 6}}},
			opts: stream.CheckOptions{StartTimeline: 1, StartLSN: lsn("0/100028")},
			from: segName(1, 1), to: segName(1, 6), tli: 1, expected: 6, missing: names(s1(1), s1(2)), ranges: 1},
		{name: "backup newer than all WAL", a: archived{segs: map[uint32][2]uint64{1: {1, 3}}},
			opts: stream.CheckOptions{StartTimeline: 1, StartLSN: lsn("0/500028")},
			from: segName(1, 5), to: segName(1, 5), tli: 1, expected: 1, missing: names(s1(5)), ranges: 1},
		{name: "backup and no WAL at all", opts: stream.CheckOptions{StartTimeline: 1, StartLSN: lsn("0/200028"), SegmentSize: mib},
			from: segName(1, 2), to: segName(1, 2), tli: 1, expected: 1, missing: names(s1(2)), ranges: 1},
		{name: "standalone backup and no WAL yet", opts: stream.CheckOptions{StartTimeline: 1, StartLSN: lsn("0/200100"), SegmentSize: mib, SelfContained: true},
			ok: true, missing: []string{}},
		{name: "standalone backup, WAL only before it", a: archived{segs: map[uint32][2]uint64{1: {1, 1}}},
			opts: stream.CheckOptions{StartTimeline: 1, StartLSN: lsn("0/200100"), SelfContained: true},
			ok:   true, missing: []string{}},
		{name: "standalone backup, WAL after it without its stop segment",
			a:    archived{segs: map[uint32][2]uint64{1: {3, 5}}},
			opts: stream.CheckOptions{StartTimeline: 1, StartLSN: lsn("0/200100"), SelfContained: true},
			from: segName(1, 2), to: segName(1, 5), tli: 1, expected: 4, missing: names(s1(2)), ranges: 1},
		{name: "timeline switch, switch segment from the child",
			a:  archived{segs: map[uint32][2]uint64{1: {1, 4}, 2: {4, 7}}, history: map[uint32]string{2: fork4}},
			ok: true, from: segName(1, 1), to: segName(2, 7), tli: 2, expected: 7, missing: []string{}},
		{name: "parent's copy of the switch segment does not fill the child's",
			a:    archived{segs: map[uint32][2]uint64{1: {1, 4}, 2: {4, 7}}, skip: []wal.Segment{{Timeline: 2, No: 4}}, history: map[uint32]string{2: fork4}},
			from: segName(1, 1), to: segName(2, 7), tli: 2, expected: 7, missing: []string{segName(2, 4)}, ranges: 1},
		{name: "the old timeline's WAL after the fork is not expected",
			a:  archived{segs: map[uint32][2]uint64{1: {1, 9}, 2: {4, 5}}, skip: []wal.Segment{s1(7)}, history: map[uint32]string{2: fork4}},
			ok: true, from: segName(1, 1), to: segName(2, 5), tli: 2, expected: 5, missing: []string{}},
		{name: "oldest WAL only on the new timeline",
			a:  archived{segs: map[uint32][2]uint64{2: {4, 6}}, history: map[uint32]string{2: fork4}},
			ok: true, from: segName(2, 4), to: segName(2, 6), tli: 2, expected: 3, missing: []string{}},
		{name: "history file of the newest timeline missing",
			a:    archived{segs: map[uint32][2]uint64{1: {1, 4}, 2: {4, 6}}},
			opts: stream.CheckOptions{StartTimeline: 1, StartLSN: lsn("0/100028")},
			from: segName(1, 1), to: segName(2, 6), tli: 2, expected: 7, missing: []string{}, history: []string{"00000002.history"}},
		{name: "ancestor's history file missing",
			a: archived{segs: map[uint32][2]uint64{1: {1, 4}, 2: {4, 5}, 3: {5, 6}},
				history: map[uint32]string{3: fork4 + "2\t0/500200\tagain\n"}},
			from: segName(1, 1), to: segName(3, 6), tli: 3, expected: 6, missing: []string{}, history: []string{"00000002.history"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := repotest.New(t)
			tt.a.store(t, r)
			rep, err := stream.CheckGaps(ctx, r, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if tt.history == nil {
				tt.history = []string{}
			}
			if rep.OK != tt.ok || rep.From != tt.from || rep.To != tt.to || rep.Timeline != tt.tli ||
				rep.SegmentsExpected != tt.expected || strings.Join(rep.Missing, ",") != strings.Join(tt.missing, ",") ||
				strings.Join(rep.MissingHistory, ",") != strings.Join(tt.history, ",") || rep.Partial != tt.partial ||
				len(rep.MissingRanges) != tt.ranges {
				t.Fatalf("report %+v", rep)
			}
			if tt.expected > 0 && rep.SegmentSize != mib {
				t.Fatalf("segment size %d, want 1 MiB from the stored headers", rep.SegmentSize)
			}
		})
	}
}

func TestCheckGapsErrors(t *testing.T) {
	ctx := context.Background()
	// A backup on timeline 1 after timeline 2 forked off it cannot lead to
	// timeline 2.
	r, _ := repotest.New(t)
	archived{segs: map[uint32][2]uint64{1: {1, 8}, 2: {4, 6}}, history: map[uint32]string{2: "1\t0/400100\tx\n"}}.store(t, r)
	_, err := stream.CheckGaps(ctx, r, stream.CheckOptions{StartTimeline: 1, StartLSN: 0x600028})
	if err == nil || !strings.Contains(err.Error(), "not in the history of timeline 2") {
		t.Fatalf("err = %v", err)
	}
	// A damaged history file stops the check.
	r2, _ := repotest.New(t)
	archived{segs: map[uint32][2]uint64{2: {4, 6}}}.store(t, r2)
	if _, err := r2.SaveWAL(ctx, 2, "00000002.history", []byte("nonsense\n"), false); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CheckGaps(ctx, r2, stream.CheckOptions{}); err == nil || !strings.Contains(err.Error(), "00000002.history") {
		t.Fatalf("err = %v", err)
	}
}

func TestCheckGaps16MiB(t *testing.T) {
	ctx := context.Background()
	r, _ := repotest.New(t)
	mustSave(t, r, "000000010000000000000003", fixture(t, "pg15-16mib/000000010000000000000003.gz"))
	mustSave(t, r, "000000010000000000000003.00000028.backup", fixture(t, "pg15-16mib/000000010000000000000003.00000028.backup"))
	rep, err := stream.CheckGaps(ctx, r, stream.CheckOptions{StartTimeline: 1, StartLSN: 0x2000028})
	if err != nil {
		t.Fatal(err)
	}
	if rep.SegmentSize != 16*mib || rep.OK || strings.Join(rep.Missing, ",") != "000000010000000000000002" {
		t.Fatalf("report %+v", rep)
	}
}

package backup

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// The fixture: a cluster on timeline 1 with backups b1 (0/2...) and b2
// (0/5...); a restored copy promoted at 0/7000100 into timeline 2 with
// backup b3 (0/8...); the old primary went on writing timeline 1 and took
// b4 (0/9...) after the fork. Segment n is stored at base + n*10 minutes.
var base = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

func segTime(n int) time.Time { return base.Add(time.Duration(n) * 10 * time.Minute) }

func lsnOf(t testing.TB, s string) pglogrepl.LSN {
	t.Helper()
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func testBackup(t testing.TB, id string, tli uint32, start, stop string, startAt, stopAt time.Time) PlanBackup {
	t.Helper()
	s, e := lsnOf(t, start), lsnOf(t, stop)
	label := fmt.Sprintf("START WAL LOCATION: %s (file %s)\nCHECKPOINT LOCATION: %s\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: %s\nLABEL: %s\nSTART TIMELINE: %d\n",
		s, wal.SegmentName(tli, s, wal.DefaultSegmentSize), s, startAt.Format("2006-01-02 15:04:05 MST"), id, tli)
	return PlanBackup{ID: id, Label: "label " + id[:2], Info: &Info{
		SystemIdentifier: "7300000000000000001", ServerVersion: "15.8", Timeline: tli, StopTimeline: tli,
		StartLSN: s, StopLSN: e, StartTime: startAt, StopTime: stopAt, BackupLabel: label,
	}}
}

func fixture(t testing.TB) PlanInput {
	t.Helper()
	in := PlanInput{
		Backups: []PlanBackup{
			testBackup(t, "b1000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 1, "0/2000028", "0/2000100", segTime(2), segTime(2).Add(time.Second)),
			testBackup(t, "b2000000bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", 1, "0/5000028", "0/5000138", segTime(5), segTime(5).Add(time.Second)),
			testBackup(t, "b3000000cccccccccccccccccccccccccccccccccccccccccccccccccccccccc", 2, "0/8000028", "0/8000100", segTime(8), segTime(8).Add(time.Second)),
			testBackup(t, "b4000000dddddddddddddddddddddddddddddddddddddddddddddddddddddddd", 1, "0/9000028", "0/9000100", segTime(9).Add(time.Minute), segTime(9).Add(2*time.Minute)),
		},
		Histories: map[uint32][]byte{2: []byte("1\t0/7000100\tno recovery target specified\n")},
	}
	add := func(tli uint32, name string, at time.Time) {
		in.WAL = append(in.WAL, repo.WALEntry{Timeline: tli, Name: name, ModTime: at})
	}
	for n := 2; n <= 10; n++ { // timeline 1: 02..0A
		add(1, wal.Segment{Timeline: 1, No: uint64(n)}.Name(wal.DefaultSegmentSize), segTime(n+1))
	}
	for n := 7; n <= 11; n++ { // timeline 2: 07..0B
		add(2, wal.Segment{Timeline: 2, No: uint64(n)}.Name(wal.DefaultSegmentSize), segTime(n+1).Add(time.Minute))
	}
	add(1, "000000010000000000000007.partial", segTime(7).Add(30*time.Second))
	add(1, "000000010000000000000002.00000028.backup", segTime(2))
	add(2, "00000002.history", segTime(7))
	return in
}

func without(in PlanInput, names ...string) PlanInput {
	var keep []repo.WALEntry
	for _, e := range in.WAL {
		drop := false
		for _, n := range names {
			drop = drop || e.Name == n
		}
		if !drop {
			keep = append(keep, e)
		}
	}
	in.WAL = keep
	return in
}

func TestPlanRestoreGolden(t *testing.T) {
	tl := func(s string) wal.TimelineGoal {
		g, err := wal.ParseTimelineGoal(s)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	lsnT := func(s string) wal.Target { return wal.LSNTarget(lsnOf(t, s)) }
	timeT := func(d time.Time) wal.Target { return wal.TimeTarget(d) }
	standalone := fixture(t)
	standalone.Backups = []PlanBackup{standalone.Backups[0]}
	standalone.Backups[0].Info.Standalone = true
	standalone.WAL = nil
	partial := fixture(t)
	partial.WAL = append(partial.WAL, repo.WALEntry{Timeline: 2, Name: "00000002000000000000000C.partial", ModTime: segTime(13)})
	mib := fixture(t)
	mib.Backups = []PlanBackup{testBackup(t, "e1000000", 1, "0/2000028", "0/2000100", segTime(2), segTime(2).Add(time.Second))}
	mib.Backups[0].Info.BackupLabel = "START WAL LOCATION: 0/2000028 (file 000000010000000000000020)\n"
	mib.WAL = []repo.WALEntry{{Timeline: 1, Name: "000000010000000000000020", ModTime: segTime(3)}, {Timeline: 1, Name: "000000010000000000000021", ModTime: segTime(4)}}

	for _, tc := range []struct {
		name string
		in   PlanInput
		ref  string
		tg   wal.Target
		tl   string
		mod  func(*PlanInput)
		err  error
	}{
		{name: "latest-end", in: fixture(t)},
		{name: "latest-time-on-timeline-2-before-b3", in: fixture(t), tg: timeT(segTime(7).Add(5 * time.Minute))},
		{name: "latest-time-after-b3", in: fixture(t), tg: timeT(segTime(10))},
		{name: "time-before-first-backup", in: fixture(t), tg: timeT(segTime(1)), err: ErrTargetTooEarly},
		{name: "time-during-first-backup", in: fixture(t), tg: timeT(segTime(2).Add(time.Millisecond)), err: ErrTargetTooEarly},
		{name: "lsn-before-first-backup-end", in: fixture(t), tg: lsnT("0/20000FF"), err: ErrTargetTooEarly},
		{name: "lsn-at-first-backup-end", in: fixture(t), tg: lsnT("0/2000100")},
		{name: "lsn-between-b2-and-fork", in: fixture(t), tg: lsnT("0/6000000")},
		{name: "lsn-on-timeline-2", in: fixture(t), tg: lsnT("0/A000060")},
		{name: "timeline-1-after-fork", in: fixture(t), tg: lsnT("0/8800000"), tl: "1"},
		{name: "timeline-1-end", in: fixture(t), tl: "1"},
		{name: "timeline-current", in: fixture(t), tl: "current"},
		{name: "timeline-3-unknown", in: fixture(t), tl: "3", err: ErrNoBackup},
		{name: "explicit-b1-time", in: fixture(t), ref: "b1", tg: timeT(segTime(3))},
		{name: "explicit-b3-ends-after-target", in: fixture(t), ref: "b3", tg: timeT(segTime(7)), err: ErrBackupUnusable},
		{name: "explicit-b4-off-timeline", in: fixture(t), ref: "b4000000dddddddddddddddddddddddddddddddddddddddddddddddddddddddd", err: ErrBackupUnusable},
		{name: "explicit-b4-timeline-1", in: fixture(t), ref: "b4", tl: "1"},
		{name: "explicit-b3-timeline-1", in: fixture(t), ref: "b3", tl: "1", err: ErrBackupUnusable},
		{name: "explicit-unknown", in: fixture(t), ref: "ff", err: repo.ErrSnapshotNotFound},
		{name: "explicit-ambiguous", in: fixture(t), ref: "b", err: repo.ErrAmbiguousSnapshot},
		{name: "immediate", in: fixture(t), tg: wal.ImmediateTarget()},
		{name: "xid", in: fixture(t), tg: wal.XIDTarget(742)},
		{name: "name", in: fixture(t), tg: wal.NameTarget("before upgrade"), tl: "1"},
		{name: "gap-end", in: without(fixture(t), "00000002000000000000000A"), err: ErrWALMissing},
		{name: "gap-after-lsn-target", in: without(fixture(t), "00000002000000000000000A"), tg: lsnT("0/9FFFFFF")},
		{name: "gap-before-lsn-target", in: without(fixture(t), "00000002000000000000000A"), tg: lsnT("0/A000000"), err: ErrWALMissing},
		{name: "gap-after-time-target", in: without(fixture(t), "00000002000000000000000A"), tg: timeT(segTime(9))},
		{name: "gap-before-time-target", in: without(fixture(t), "00000002000000000000000A"), tg: timeT(segTime(11)), err: ErrWALMissing},
		{name: "gap-in-backup", in: without(fixture(t), "000000010000000000000002"), ref: "b1", err: ErrWALMissing},
		{name: "gap-standby", in: without(fixture(t), "00000002000000000000000A"), mod: func(in *PlanInput) { in.Standby = true }},
		{name: "time-beyond-archive", in: fixture(t), tg: timeT(segTime(20)), err: ErrTargetBeyondArchive},
		{name: "partial-tail", in: partial},
		{name: "standalone-no-archive", in: standalone},
		{name: "standalone-immediate", in: standalone, tg: wal.ImmediateTarget()},
		{name: "files-only", in: without(fixture(t), "000000010000000000000002"), mod: func(in *PlanInput) { in.FilesOnly = true }},
		{name: "no-backups", in: PlanInput{}, err: ErrNoBackup},
		{name: "one-mib-segments", in: mib},
		{name: "corrupt-history", in: fixture(t), mod: func(in *PlanInput) { in.Histories[2] = []byte("1\tzz\tbad\n") }, err: wal.ErrInvalidHistory},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.Ref, in.Target, in.Timeline = tc.ref, tc.tg, tl(tc.tl)
			if tc.mod != nil {
				tc.mod(&in)
			}
			p, err := PlanRestore(in)
			var got string
			switch {
			case tc.err != nil:
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				got = "error: " + err.Error() + "\n"
			case err != nil:
				t.Fatal(err)
			default:
				b, err := json.MarshalIndent(p, "", "  ")
				if err != nil {
					t.Fatal(err)
				}
				got = string(b) + "\n"
			}
			golden(t, filepath.Join("testdata", "plan", tc.name+".golden"), got)
		})
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./backup -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs (go test ./backup -update rewrites it):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func TestSegmentSizeOf(t *testing.T) {
	for _, tc := range []struct {
		label string
		want  uint64
	}{
		{"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n", 16 << 20},
		{"START WAL LOCATION: 0/2000028 (file 000000010000000000000020)\n", 1 << 20},
		{"START WAL LOCATION: 1/80000028 (file 000000010000000100000002)\n", 1 << 30},
		{"START WAL LOCATION: 0/28 (file 000000010000000000000000)\n", 16 << 20}, // every size fits
		{"", 16 << 20},
		{"START WAL LOCATION: 0/2000028 (file 000000010000000000000009)\n", 16 << 20}, // none fits
	} {
		if got := SegmentSizeOf(&Info{BackupLabel: tc.label}); got != tc.want {
			t.Errorf("SegmentSizeOf(%q) = %d, want %d", tc.label, got, tc.want)
		}
	}
	// The size recorded at backup time wins.
	if got := SegmentSizeOf(&Info{WALSegmentSize: 64 << 20, BackupLabel: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"}); got != 64<<20 {
		t.Errorf("recorded size: %d", got)
	}
}

// TestPlanJSONIsStable pins the keys of the plan document (documented in
// docs/reference/cli.md).
func TestPlanJSONIsStable(t *testing.T) {
	p, err := PlanRestore(fixture(t))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(p)
	var doc map[string]any
	json.Unmarshal(b, &doc)
	var keys []string
	for k := range doc {
		keys = append(keys, k)
	}
	for _, k := range []string{"backup", "chosen", "target", "timeline_goal", "timeline", "segment_size", "history_files", "wal",
		"first_segment", "last_segment", "segments", "bytes", "partial_segments", "consistent_at", "archive_end", "archive_end_stored", "notes"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("plan JSON lacks %q (has %s)", k, strings.Join(keys, ", "))
		}
	}
}

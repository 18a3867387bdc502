package wal_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/internal/pg/wal"
)

func TestParseTargetTime(t *testing.T) {
	cet := time.FixedZone("X", 3600)
	want := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
	for _, tc := range []struct {
		in   string
		loc  *time.Location
		want time.Time
	}{
		{"2026-01-02T03:04:05.123456Z", nil, want},
		{"2026-01-02T03:04:05.123456789Z", nil, want}, // truncated, never rounded up
		{"2026-01-02T04:04:05.123456+01:00", nil, want},
		{"2026-01-02 03:04:05.123456+00", nil, want},
		{"2026-01-02 05:34:05.123456+0230", nil, want},
		{"2026-01-02 05:34:05.123456+02:30", nil, want},
		{"2026-01-02 03:04:05.123456 UTC", nil, want},
		{" 2026-01-02 03:04:05.123456 ", nil, want},
		{"2026-01-02 04:04:05.123456", cet, want},
		{"2026-01-02T03:04:05.123456", nil, want},
		{"2026-01-02 03:04", nil, time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)},
		{"2026-01-02", cet, time.Date(2026, 1, 1, 23, 0, 0, 0, time.UTC)},
	} {
		got, err := wal.ParseTargetTime(tc.in, tc.loc)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("ParseTargetTime(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "yesterday", "2026-13-01", "2026-01-02 03:04:05 XYZ", "1700000000"} {
		if _, err := wal.ParseTargetTime(bad, nil); !errors.Is(err, wal.ErrInvalidTarget) {
			t.Errorf("ParseTargetTime(%q): err = %v, want ErrInvalidTarget", bad, err)
		}
	}
}

func TestFormatTargetTimeRoundTrips(t *testing.T) {
	in := time.Date(2026, 7, 8, 9, 10, 11, 987654321, time.FixedZone("", -7*3600))
	s := wal.FormatTargetTime(in)
	if s != "2026-07-08 16:10:11.987654+00" {
		t.Fatalf("FormatTargetTime = %q", s)
	}
	back, err := wal.ParseTargetTime(s, nil)
	if err != nil || !back.Equal(in.Truncate(time.Microsecond)) {
		t.Fatalf("round trip: %v, %v", back, err)
	}
}

func TestParseTargetLSNAndXID(t *testing.T) {
	if lsn, err := wal.ParseTargetLSN("16/B374D848"); err != nil || lsn.String() != "16/B374D848" {
		t.Fatalf("ParseTargetLSN = %v, %v", lsn, err)
	}
	for _, bad := range []string{"", "0/0", "16-B374D848", "0/1/2", "100000000/0", "x/1", "0/1 trailing"} {
		if _, err := wal.ParseTargetLSN(bad); !errors.Is(err, wal.ErrInvalidTarget) {
			t.Errorf("ParseTargetLSN(%q): err = %v", bad, err)
		}
	}
	if x, err := wal.ParseTargetXID("4294968296"); err != nil || x != 4294968296 {
		t.Fatalf("ParseTargetXID = %d, %v", x, err)
	}
	for _, bad := range []string{"", "-1", "abc", "0", "2", "4294967296" /* epoch 1, xid 0 */} {
		if _, err := wal.ParseTargetXID(bad); !errors.Is(err, wal.ErrInvalidTarget) {
			t.Errorf("ParseTargetXID(%q): err = %v", bad, err)
		}
	}
}

func TestTargetValidate(t *testing.T) {
	ok := []wal.Target{
		{}, wal.ImmediateTarget(), wal.NameTarget(strings.Repeat("n", 63)),
		{Kind: wal.TargetLSN, LSN: 1, Exclusive: true},
		wal.TimeTarget(time.Now()), wal.XIDTarget(742),
	}
	for _, tg := range ok {
		if err := tg.Validate(); err != nil {
			t.Errorf("%v: %v", tg, err)
		}
	}
	bad := []wal.Target{
		{Kind: wal.TargetTime}, {Kind: wal.TargetLSN}, wal.XIDTarget(1), wal.NameTarget(""),
		wal.NameTarget(strings.Repeat("n", 64)), wal.NameTarget("a\nb"),
		{Kind: wal.TargetName, Name: "x", Exclusive: true}, {Kind: wal.TargetImmediate, Exclusive: true},
		{Exclusive: true}, {Kind: 99},
	}
	for _, tg := range bad {
		if err := tg.Validate(); !errors.Is(err, wal.ErrInvalidTarget) {
			t.Errorf("%#v: err = %v, want ErrInvalidTarget", tg, err)
		}
	}
}

func TestTargetStringAndJSON(t *testing.T) {
	for _, tc := range []struct {
		t          wal.Target
		str, jsons string
	}{
		{wal.Target{}, "end of archive", `{"kind":"end"}`},
		{wal.ImmediateTarget(), "immediate (the end of the backup)", `{"kind":"immediate","value":"immediate"}`},
		{wal.LSNTarget(0x3000060), "lsn 0/3000060", `{"kind":"lsn","value":"0/3000060","inclusive":true}`},
		{wal.Target{Kind: wal.TargetXID, XID: 742, Exclusive: true}, "xid 742 (exclusive)", `{"kind":"xid","value":"742","inclusive":false}`},
		{wal.NameTarget(`it's "x"`), `name "it's \"x\""`, `{"kind":"name","value":"it's \"x\""}`},
		{wal.TimeTarget(time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)), "time 2026-01-02 03:04:05.000006+00",
			`{"kind":"time","value":"2026-01-02 03:04:05.000006+00","inclusive":true}`},
	} {
		if s := tc.t.String(); s != tc.str {
			t.Errorf("String = %q, want %q", s, tc.str)
		}
		b, err := json.Marshal(tc.t)
		if err != nil || string(b) != tc.jsons {
			t.Errorf("JSON = %s, %v; want %s", b, err, tc.jsons)
		}
	}
}

func TestTargetActionAndTimelineGoal(t *testing.T) {
	for _, s := range []string{"pause", "Promote", " shutdown "} {
		if _, err := wal.ParseTargetAction(s); err != nil {
			t.Errorf("ParseTargetAction(%q): %v", s, err)
		}
	}
	if _, err := wal.ParseTargetAction("resume"); !errors.Is(err, wal.ErrInvalidTarget) {
		t.Errorf("ParseTargetAction(resume): %v", err)
	}
	if wal.DefaultTargetAction != wal.ActionPause {
		t.Errorf("the default target action is %q; the docs say pause", wal.DefaultTargetAction)
	}
	histories := map[uint32]bool{2: true, 3: true, 5: true}
	has := func(tli uint32) bool { return histories[tli] }
	for _, tc := range []struct {
		in       string
		str      string
		backup   uint32
		resolved uint32
	}{
		{"", "latest", 1, 3}, // 4.history is missing: 5 is not reached, as in findNewestTimeLine
		{"latest", "latest", 4, 5},
		{"current", "current", 2, 2},
		{"7", "7", 1, 7},
	} {
		g, err := wal.ParseTimelineGoal(tc.in)
		if err != nil {
			t.Fatalf("ParseTimelineGoal(%q): %v", tc.in, err)
		}
		if g.String() != tc.str {
			t.Errorf("ParseTimelineGoal(%q).String() = %q", tc.in, g.String())
		}
		if got := g.Resolve(tc.backup, has); got != tc.resolved {
			t.Errorf("%s from %d resolves to %d, want %d", g, tc.backup, got, tc.resolved)
		}
	}
	for _, bad := range []string{"0", "-1", "newest", "0x2"} {
		if _, err := wal.ParseTimelineGoal(bad); !errors.Is(err, wal.ErrInvalidTarget) {
			t.Errorf("ParseTimelineGoal(%q): %v", bad, err)
		}
	}
}

func TestParseTargetTimeAt(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skip("no time zone data:", err)
	}
	now := time.Date(2026, 12, 7, 0, 30, 0, 123456789, time.UTC) // 01:30 in Paris
	for _, tc := range []struct {
		in   string
		loc  *time.Location
		want time.Time
		err  bool
	}{
		{in: "now", want: now.Truncate(time.Microsecond)},
		{in: "5 minutes ago", want: now.Add(-5 * time.Minute).Truncate(time.Microsecond)},
		{in: "1 hour 30 minutes ago", want: now.Add(-90 * time.Minute).Truncate(time.Microsecond)},
		{in: "90m ago", want: now.Add(-90 * time.Minute).Truncate(time.Microsecond)},
		{in: "2 Days Ago", want: now.Add(-48 * time.Hour).Truncate(time.Microsecond)},
		{in: "today 14:00", loc: time.UTC, want: time.Date(2026, 12, 7, 14, 0, 0, 0, time.UTC)},
		{in: "yesterday 23:15:30", loc: time.UTC, want: time.Date(2026, 12, 6, 23, 15, 30, 0, time.UTC)},
		{in: "yesterday", loc: time.UTC, want: time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)},
		// Days are the operator's: 00:30 UTC is already the 7th in Paris,
		// so "yesterday 14:00" there is the 6th at 14:00 Paris time.
		{in: "yesterday 14:00", loc: paris, want: time.Date(2026, 12, 6, 14, 0, 0, 0, paris)},
		{in: "2026-12-01 10:00:00+00", want: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)},
		{in: "5 fortnights ago", err: true},
		{in: "minutes ago", err: true},
		{in: "0 minutes ago", err: true},
		{in: "-5m ago", err: true},
		{in: "today 25:00", err: true},
		{in: "tomorrow", err: true},
	} {
		got, err := wal.ParseTargetTimeAt(tc.in, tc.loc, now)
		if tc.err {
			if err == nil || !errors.Is(err, wal.ErrInvalidTarget) {
				t.Errorf("%q: got %v, %v; want ErrInvalidTarget", tc.in, got, err)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("%q: got %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

package backup

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/repo"
)

var now = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

// daily returns n backups, one a day at 02:00, the newest yesterday.
func daily(n int) []Backup {
	var out []Backup
	for i := n; i >= 1; i-- {
		t := time.Date(2026, 11, 21-i, 2, 0, 0, 0, time.UTC)
		id := fmt.Sprintf("%064d", i)
		out = append(out, Backup{
			Snapshot: &repo.Snapshot{ID: id, StartTime: t},
			Info:     &Info{StartLSN: pglogrepl.LSN(uint64(100-i) << 24)},
		})
	}
	return out
}

func kept(ds []Decision) []int {
	var out []int
	for i, d := range ds {
		if d.Keep {
			out = append(out, i)
		}
	}
	return out
}

func TestPlanRetention(t *testing.T) {
	tests := []struct {
		name   string
		n      int
		policy Policy
		want   []int // indexes kept, newest first
	}{
		{"no policy keeps all", 4, Policy{}, []int{0, 1, 2, 3}},
		{"count", 5, Policy{Count: 2}, []int{0, 1}},
		{"age drops old", 10, Policy{Count: 10, AgeDaysMax: 3}, []int{0, 1}}, // 11-18 02:00 is 3.4 days old
		{"count_min beats age", 10, Policy{Count: 10, AgeDaysMax: 1, CountMin: 2}, []int{0, 1}},
		{"count caps age", 10, Policy{Count: 2, AgeDaysMax: 30}, []int{0, 1}},
		{"daily adds to count", 10, Policy{Count: 1, KeepDaily: 4}, []int{0, 1, 2, 3}},
		{"weekly", 20, Policy{KeepWeekly: 2}, []int{0, 5}},
		{"never nothing", 3, Policy{AgeDaysMax: 1, Count: 5}, []int{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := PlanRetention(daily(tt.n), tt.policy, now)
			got := kept(ds)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("kept %v, want %v", got, tt.want)
				for _, d := range ds {
					t.Logf("  %s keep=%v %s", d.Time.Format("01-02"), d.Keep, strings.Join(d.Reasons, "; "))
				}
			}
			for _, d := range ds {
				if len(d.Reasons) == 0 {
					t.Errorf("%s has no reason", d.ID[:8])
				}
			}
		})
	}
}

func TestPlanWALRetention(t *testing.T) {
	const seg = 16 << 20
	backups := daily(3)
	retained := backups[1:] // the two newest: StartLSNs 98<<24 and 99<<24
	entries := []repo.WALEntry{
		{Timeline: 1, Name: "000000010000000000000060"}, // 96: before
		{Timeline: 1, Name: "000000010000000000000061"}, // 97: before
		{Timeline: 1, Name: "000000010000000000000061.00000028.backup"},
		{Timeline: 1, Name: "000000010000000000000062"}, // 98: needed
		{Timeline: 1, Name: "000000010000000000000063.partial"},
		{Timeline: 2, Name: "00000002.history"},
		{Timeline: 2, Name: "000000020000000000000050"}, // older segment on another timeline
	}
	keepFrom, drop := PlanWALRetention(entries, retained, seg)
	if keepFrom != pglogrepl.LSN(98<<24) {
		t.Fatalf("keep from %s", keepFrom)
	}
	var names []string
	for _, d := range drop {
		names = append(names, d.Name)
	}
	want := "[000000010000000000000060 000000010000000000000061 000000010000000000000061.00000028.backup 000000020000000000000050]"
	if fmt.Sprint(names) != want {
		t.Fatalf("dropped %v\nwant %s", names, want)
	}
	if _, drop := PlanWALRetention(entries, nil, seg); drop != nil {
		t.Fatal("WAL dropped with no retained backup")
	}
}

// real_basebackup_count_min keeps the newest real base backups past the
// synthetic ones that count and age would keep instead.
func TestPlanRetentionRealCountMin(t *testing.T) {
	bs := daily(6) // newest first after planning: 0..5; 0-3 synthetic, 4-5 real
	for _, b := range bs[2:] {
		b.Info.Method = MethodSynthetic
	}
	cases := []struct {
		policy Policy
		want   []int
	}{
		{Policy{Count: 2}, []int{0, 1}},
		{Policy{Count: 2, RealCountMin: 1}, []int{0, 1, 4}},
		{Policy{Count: 2, RealCountMin: 2}, []int{0, 1, 4, 5}},
		{Policy{Count: 5, RealCountMin: 1}, []int{0, 1, 2, 3, 4}},
	}
	for _, c := range cases {
		if got := kept(PlanRetention(bs, c.policy, now)); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%+v: kept %v, want %v", c.policy, got, c.want)
		}
	}
}

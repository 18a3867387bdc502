package backup

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// Policy says which base backups to keep. The zero value keeps everything.
//
// Count, CountMin and AgeDaysMax follow pghoard's basebackup_count,
// basebackup_count_min and basebackup_age_days_max: keep the newest Count
// backups; when AgeDaysMax is set, drop backups older than that, but
// always keep the newest CountMin. KeepDaily, KeepWeekly and KeepMonthly
// also keep the newest backup of each of the last N days, ISO weeks and
// months that have one (in UTC), and are bounded by AgeDaysMax the same way.
type Policy struct {
	Count       int `json:"basebackup_count" yaml:"basebackup_count"`
	CountMin    int `json:"basebackup_count_min" yaml:"basebackup_count_min"`
	AgeDaysMax  int `json:"basebackup_age_days_max" yaml:"basebackup_age_days_max"`
	KeepDaily   int `json:"keep_daily" yaml:"keep_daily"`
	KeepWeekly  int `json:"keep_weekly" yaml:"keep_weekly"`
	KeepMonthly int `json:"keep_monthly" yaml:"keep_monthly"`
	// RealCountMin keeps the newest this many real base backups (taken
	// from the server, not synthetic) whatever the other rules say: a
	// synthetic backup is only as good as the replay that made it, and an
	// operator may want a backup the server itself wrote always at hand.
	RealCountMin int `json:"real_basebackup_count_min" yaml:"real_basebackup_count_min"`
}

// IsZero reports whether the policy keeps everything.
func (p Policy) IsZero() bool { return p == Policy{} }

// Backup is a base-backup snapshot with its PostgreSQL facts.
type Backup struct {
	Snapshot *repo.Snapshot
	Info     *Info
}

// Backups lists the base backups of the repository, oldest first.
func Backups(ctx context.Context, r *repo.Repository) ([]Backup, error) {
	snaps, err := r.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	var out []Backup
	for _, s := range snaps {
		if s.Kind != SnapshotKind {
			continue
		}
		info, err := InfoOf(s)
		if err != nil {
			return nil, err
		}
		out = append(out, Backup{Snapshot: s, Info: info})
	}
	return out, nil
}

// Decision is what the policy says about one backup, and why.
type Decision struct {
	ID      string    `json:"id"`
	Time    time.Time `json:"time"`
	Keep    bool      `json:"keep"`
	Reasons []string  `json:"reasons"`
}

// PlanRetention applies p to backups (any order) at time now. The result
// is newest first.
func PlanRetention(backups []Backup, p Policy, now time.Time) []Decision {
	sorted := append([]Backup(nil), backups...)
	slices.SortFunc(sorted, func(a, b Backup) int { return b.Snapshot.StartTime.Compare(a.Snapshot.StartTime) }) // newest first
	out := make([]Decision, len(sorted))
	for i, b := range sorted {
		out[i] = Decision{ID: b.Snapshot.ID, Time: b.Snapshot.StartTime}
	}
	if p.IsZero() {
		for i := range out {
			out[i].Keep, out[i].Reasons = true, []string{"no retention policy"}
		}
		return out
	}
	keep := func(i int, why string) {
		out[i].Keep = true
		out[i].Reasons = append(out[i].Reasons, why)
	}
	for i := range out {
		if p.Count > 0 && i < p.Count {
			keep(i, fmt.Sprintf("one of the newest %d (basebackup_count)", p.Count))
		}
	}
	calendar := func(n int, period string, key func(time.Time) string) {
		seen := map[string]bool{}
		for i := range out {
			k := key(out[i].Time.UTC())
			if !seen[k] && len(seen) < n {
				seen[k] = true
				keep(i, fmt.Sprintf("newest of %s %s (keep_%s %d)", period, k, map[string]string{"day": "daily", "week": "weekly", "month": "monthly"}[period], n))
			}
		}
	}
	if p.KeepDaily > 0 {
		calendar(p.KeepDaily, "day", func(t time.Time) string { return t.Format("2006-01-02") })
	}
	if p.KeepWeekly > 0 {
		calendar(p.KeepWeekly, "week", func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) })
	}
	if p.KeepMonthly > 0 {
		calendar(p.KeepMonthly, "month", func(t time.Time) string { return t.Format("2006-01") })
	}
	if p.AgeDaysMax > 0 {
		limit := now.Add(-time.Duration(p.AgeDaysMax) * 24 * time.Hour)
		for i := range out {
			if !out[i].Keep || !out[i].Time.Before(limit) {
				continue
			}
			if i < p.CountMin {
				out[i].Reasons = append(out[i].Reasons, fmt.Sprintf("older than %d days, kept as one of the newest %d (basebackup_count_min)", p.AgeDaysMax, p.CountMin))
				continue
			}
			out[i].Keep = false
			out[i].Reasons = []string{fmt.Sprintf("older than %d days (basebackup_age_days_max)", p.AgeDaysMax)}
		}
	}
	if p.RealCountMin > 0 {
		real := 0
		for i, b := range sorted {
			if b.Info == nil || b.Info.Method == MethodSynthetic || real >= p.RealCountMin {
				continue
			}
			real++
			if !out[i].Keep {
				out[i].Keep, out[i].Reasons = true, nil
			}
			out[i].Reasons = append(out[i].Reasons, fmt.Sprintf("one of the newest %d real base backups (real_basebackup_count_min)", p.RealCountMin))
		}
	}
	kept := 0
	for i := range out {
		if out[i].Keep {
			kept++
		}
	}
	if kept == 0 && len(out) > 0 {
		// A policy must never leave nothing to restore from.
		out[0].Keep = true
		out[0].Reasons = append(out[0].Reasons, "the newest backup is always kept")
	}
	for i := range out {
		if !out[i].Keep && len(out[i].Reasons) == 0 {
			out[i].Reasons = []string{"not kept by any rule"}
		}
	}
	return out
}

// WALDecision lists WAL catalogue entries that no retained backup needs.
type WALDecision struct {
	Timeline uint32 `json:"timeline"`
	Name     string `json:"name"`
}

// PlanWALRetention returns the WAL entries that end before the start of
// the oldest retained backup: no retained backup can replay them. History
// files are always kept (they are tiny and describe every timeline). With
// no retained backup nothing is removed: WAL is never deleted wholesale.
func PlanWALRetention(entries []repo.WALEntry, retained []Backup, segSize uint64) (keepFrom pglogrepl.LSN, drop []WALDecision) {
	if len(retained) == 0 {
		return 0, nil
	}
	keepFrom = retained[0].Info.StartLSN
	for _, b := range retained[1:] {
		keepFrom = min(keepFrom, b.Info.StartLSN)
	}
	firstNeeded := wal.SegmentNo(keepFrom, segSize)
	for _, e := range entries {
		fn, err := wal.ParseFileName(strings.TrimSuffix(e.Name, ".partial"), segSize)
		if err != nil {
			continue // not ours to judge
		}
		switch fn.Kind {
		case wal.KindSegment, wal.KindBackupHistory:
			if fn.SegNo < firstNeeded {
				drop = append(drop, WALDecision{Timeline: e.Timeline, Name: e.Name})
			}
		}
	}
	slices.SortFunc(drop, func(a, b WALDecision) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.Timeline, b.Timeline))
	})
	return keepFrom, drop
}

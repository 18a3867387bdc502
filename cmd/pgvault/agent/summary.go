package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/stream/wal"
)

// PITRWindow is the range of times a restore can reach: from the end of
// the oldest restorable backup to when the newest WAL of an unbroken run
// from a backup was stored.
type PITRWindow struct {
	Earliest    time.Time `json:"earliest"`
	Latest      time.Time `json:"latest"`
	Seconds     float64   `json:"seconds"`
	EarliestLSN string    `json:"earliest_lsn"`
	LatestLSN   string    `json:"latest_lsn"`
}

// Summary is what the agent and `pgvault status` read from a repository.
type Summary struct {
	// Backups are the base backups, oldest first.
	Backups []backup.Backup
	Last    *BackupInfo
	PITR    *PITRWindow
	// WALFiles and LastArchived describe the WAL catalogue: its size and
	// when the newest entry was stored.
	WALFiles     int
	LastArchived time.Time
	// ArchivedEnd is the end of the newest segment stored on the newest
	// timeline (complete or partial); 0 without WAL.
	ArchivedEnd pglogrepl.LSN
	// Stats is set when asked for (it walks the index).
	Stats *repo.Stats
}

// Summarize reads a repository's backups, WAL catalogue and PITR window,
// and its stats when withStats.
func Summarize(ctx context.Context, r *repo.Repository, withStats bool) (*Summary, error) {
	backups, err := backup.Backups(ctx, r)
	if err != nil {
		return nil, err
	}
	sum := &Summary{Backups: backups}
	if n := len(backups); n > 0 {
		sum.Last = backupInfo(newestBackup(backups))
	}
	in, err := planInput(ctx, r, backups)
	if err != nil {
		return nil, err
	}
	sum.WALFiles = len(in.WAL)
	segSize := uint64(wal.DefaultSegmentSize)
	if sum.Last != nil {
		segSize = newestBackup(backups).Info.SegmentSize()
	}
	var newest wal.Segment
	for _, e := range in.WAL {
		if e.ModTime.After(sum.LastArchived) {
			sum.LastArchived = e.ModTime
		}
		f, err := wal.ParseFileName(e.Name, segSize)
		if err != nil || (f.Kind != wal.KindSegment && f.Kind != wal.KindPartial) {
			continue
		}
		s := f.Segment()
		if s.Timeline > newest.Timeline || (s.Timeline == newest.Timeline && s.No >= newest.No) {
			newest = s
			if f.Kind == wal.KindPartial {
				sum.ArchivedEnd = s.Start(segSize) // at least; its name does not say how far
			} else {
				sum.ArchivedEnd = s.Next().Start(segSize)
			}
		}
	}
	sum.PITR = pitrWindow(in)
	if withStats {
		if sum.Stats, err = r.Stats(ctx); err != nil {
			return nil, err
		}
	}
	return sum, nil
}

func newestBackup(backups []backup.Backup) backup.Backup {
	best := backups[0]
	for _, b := range backups[1:] {
		if b.Snapshot.EndTime.After(best.Snapshot.EndTime) {
			best = b
		}
	}
	return best
}

func backupInfo(b backup.Backup) *BackupInfo {
	s, info := b.Snapshot, b.Info
	return &BackupInfo{
		ID: s.ID, Label: s.Label, Start: s.StartTime.UTC(), End: s.EndTime.UTC(),
		Seconds: s.EndTime.Sub(s.StartTime).Seconds(), Bytes: info.BytesRead, StoredBytes: s.Summary.StoredBytes,
		StartLSN: info.StartLSN.String(), StopLSN: info.StopLSN.String(), Timeline: info.Timeline,
	}
}

// planInput gathers what backup.PlanRestore decides from.
func planInput(ctx context.Context, r *repo.Repository, backups []backup.Backup) (backup.PlanInput, error) {
	var in backup.PlanInput
	for _, b := range backups {
		in.Backups = append(in.Backups, backup.PlanBackup{ID: b.Snapshot.ID, Label: b.Snapshot.Label, Info: b.Info})
	}
	var err error
	if in.WAL, err = r.ListWAL(ctx); err != nil {
		return in, err
	}
	in.Histories = map[uint32][]byte{}
	for _, e := range in.WAL {
		if !strings.HasSuffix(e.Name, ".history") {
			continue
		}
		f, err := wal.ParseFileName(e.Name, wal.DefaultSegmentSize)
		if err != nil || f.Kind != wal.KindHistory {
			continue
		}
		data, _, err := r.LoadWAL(ctx, e.Timeline, e.Name)
		if err != nil {
			return in, fmt.Errorf("timeline history %s: %w", e.Name, err)
		}
		in.Histories[f.Timeline] = data
	}
	return in, nil
}

// pitrWindow plans a restore from every backup to the end of the archive
// (as a standby would: a gap after consistency ends the run instead of
// failing the plan). The earliest restorable time is the end of the
// oldest backup that can be made consistent; the latest is when the
// newest WAL of an unbroken run from any backup was stored.
func pitrWindow(in backup.PlanInput) *PITRWindow {
	var w *PITRWindow
	for _, b := range in.Backups {
		pin := in
		pin.Ref, pin.Standby = b.ID, true
		plan, err := backup.PlanRestore(pin)
		if err != nil {
			continue
		}
		latest, latestLSN := plan.ArchiveEndStored, plan.ArchiveEnd
		if latest.IsZero() || latest.Before(b.Info.StopTime) {
			latest, latestLSN = b.Info.StopTime, b.Info.StopLSN
		}
		if w == nil {
			w = &PITRWindow{Earliest: b.Info.StopTime, EarliestLSN: b.Info.StopLSN.String(), Latest: latest, LatestLSN: latestLSN.String()}
			continue
		}
		if b.Info.StopTime.Before(w.Earliest) {
			w.Earliest, w.EarliestLSN = b.Info.StopTime, b.Info.StopLSN.String()
		}
		if latest.After(w.Latest) {
			w.Latest, w.LatestLSN = latest, latestLSN.String()
		}
	}
	if w != nil {
		w.Earliest, w.Latest = w.Earliest.UTC(), w.Latest.UTC()
		w.Seconds = w.Latest.Sub(w.Earliest).Seconds()
	}
	return w
}

package service

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"golang.org/x/sync/errgroup"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// Catalog is what a restore is planned from: every base backup (with its
// snapshot, so the chosen one is not loaded twice), the WAL catalogue and
// the timeline history files.
type Catalog struct {
	// Backups are the base backups, oldest first.
	Backups []backup.Backup
	// Plan is the planner's input, without the request's fields (Ref,
	// Target, ...).
	Plan backup.PlanInput
}

// Snapshot returns the snapshot of the backup with the given ID.
func (c *Catalog) Snapshot(id string) *repo.Snapshot {
	for _, b := range c.Backups {
		if b.Snapshot.ID == id {
			return b.Snapshot
		}
	}
	return nil
}

// historyLoads is how many history files load at once: each is a round
// trip on an object store, and a repository rarely has more than a few.
const historyLoads = 8

// LoadCatalog reads the catalog. The snapshots and the WAL catalogue are
// listed at the same time, and the history files loaded in parallel: on
// an object store each is a round trip, and a mount's first query waits
// for all of them.
func LoadCatalog(ctx context.Context, r *repo.Repository) (*Catalog, error) {
	c := &Catalog{}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		c.Backups, err = backup.Backups(gctx, r)
		return err
	})
	g.Go(func() error {
		var err error
		c.Plan.WAL, err = r.ListWAL(gctx)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, b := range c.Backups {
		c.Plan.Backups = append(c.Plan.Backups, backup.PlanBackup{ID: b.Snapshot.ID, Label: b.Snapshot.Label, Info: b.Info})
	}
	type history struct {
		tli  uint32
		name string
	}
	var hs []history
	for _, e := range c.Plan.WAL {
		if f, err := wal.ParseFileName(e.Name, wal.DefaultSegmentSize); err == nil && f.Kind == wal.KindHistory {
			hs = append(hs, history{f.Timeline, e.Name})
		}
	}
	data := make([][]byte, len(hs))
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(historyLoads)
	for i, h := range hs {
		g.Go(func() error {
			d, _, err := r.LoadWAL(gctx, h.tli, h.name)
			if err != nil {
				return fmt.Errorf("timeline history %s: %w", h.name, err)
			}
			data[i] = d
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	c.Plan.Histories = make(map[uint32][]byte, len(hs))
	for i, h := range hs {
		c.Plan.Histories[h.tli] = data[i]
	}
	return c, nil
}

// Newest is the backup that ended last.
func (c *Catalog) Newest() (backup.Backup, bool) { return Newest(c.Backups) }

// Newest is the backup of backups that ended last.
func Newest(backups []backup.Backup) (backup.Backup, bool) {
	if len(backups) == 0 {
		return backup.Backup{}, false
	}
	best := backups[0]
	for _, b := range backups[1:] {
		if b.Snapshot.EndTime.After(best.Snapshot.EndTime) {
			best = b
		}
	}
	return best, true
}

// Oldest is the backup with the lowest start LSN: where the WAL archive
// must begin to be of use.
func (c *Catalog) Oldest() (backup.Backup, bool) {
	if len(c.Backups) == 0 {
		return backup.Backup{}, false
	}
	best := c.Backups[0]
	for _, b := range c.Backups[1:] {
		if b.Info.StartLSN < best.Info.StartLSN {
			best = b
		}
	}
	return best, true
}

// PlanRestore plans a restore of ref (an ID, a unique prefix, "" or
// "latest") from the catalog.
func (c *Catalog) PlanRestore(req backup.PlanInput) (*backup.RestorePlan, *repo.Snapshot, error) {
	in := c.Plan
	in.Ref, in.Target, in.Timeline, in.Standby, in.FilesOnly = req.Ref, req.Target, req.Timeline, req.Standby, req.FilesOnly
	plan, err := backup.PlanRestore(in)
	if err != nil {
		return nil, nil, err
	}
	return plan, c.Snapshot(plan.Backup.ID), nil
}

// BackupInfo is one backup as `list`, `status` and the agent's state
// report it.
type BackupInfo struct {
	ID          string    `json:"id"`
	Label       string    `json:"label"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
	Seconds     float64   `json:"duration_seconds"`
	Bytes       int64     `json:"bytes"`
	StoredBytes int64     `json:"stored_bytes"`
	StartLSN    string    `json:"start_lsn"`
	StopLSN     string    `json:"stop_lsn"`
	Timeline    uint32    `json:"timeline"`
	// Method is local, stream or synthetic ("" for old streamed backups).
	Method string `json:"method,omitempty"`
}

// InfoOf sums a backup up.
func InfoOf(b backup.Backup) *BackupInfo {
	s, info := b.Snapshot, b.Info
	return &BackupInfo{
		ID: s.ID, Label: s.Label, Start: s.StartTime.UTC(), End: s.EndTime.UTC(),
		Seconds: s.EndTime.Sub(s.StartTime).Seconds(), Bytes: info.BytesRead, StoredBytes: s.Summary.StoredBytes,
		StartLSN: info.StartLSN.String(), StopLSN: info.StopLSN.String(), Timeline: info.Timeline, Method: string(info.Method),
	}
}

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
	// Last is the newest backup, LastReal the newest taken from the
	// server (not synthetic).
	Last     *BackupInfo
	LastReal *BackupInfo
	PITR     *PITRWindow
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
	c, err := LoadCatalog(ctx, r)
	if err != nil {
		return nil, err
	}
	sum := &Summary{Backups: c.Backups, WALFiles: len(c.Plan.WAL)}
	segSize := uint64(wal.DefaultSegmentSize)
	if newest, ok := c.Newest(); ok {
		sum.Last = InfoOf(newest)
		segSize = newest.Info.SegmentSize()
	}
	var real []backup.Backup
	for _, b := range c.Backups {
		if b.Info.Method != backup.MethodSynthetic {
			real = append(real, b)
		}
	}
	if newest, ok := Newest(real); ok {
		sum.LastReal = InfoOf(newest)
	}
	var newest wal.Segment
	for _, e := range c.Plan.WAL {
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
	sum.PITR = pitrWindow(c.Plan)
	if withStats {
		if sum.Stats, err = r.Stats(ctx); err != nil {
			return nil, err
		}
	}
	return sum, nil
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

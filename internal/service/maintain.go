package service

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/stream"
)

// PruneOptions configure Prune.
type PruneOptions struct {
	Policy backup.Policy
	// Apply deletes; without it Prune only reports what would go.
	Apply bool
	// Grace: packs younger than this are never touched (0: repo's default).
	Grace  time.Duration
	Holder string
}

// Prune applies a retention policy and removes what no kept backup or WAL
// needs, under an exclusive lock when it deletes (a WAL streamer goes on:
// docs/explanation/prune.md).
func (s *Site) Prune(ctx context.Context, o PruneOptions) (*backup.PruneReport, error) {
	r, err := s.Open(ctx, Access{Reads: "prune"})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if o.Apply {
		holder := o.Holder
		if holder == "" {
			holder = "prune"
		}
		lock, err := r.Lock(ctx, repo.LockExclusive, holder)
		if err != nil {
			return nil, err
		}
		defer lock.Unlock(context.WithoutCancel(ctx))
	}
	return backup.Prune(ctx, r, backup.PruneOptions{Policy: o.Policy, Apply: o.Apply, Grace: o.Grace, Now: s.Now})
}

// CheckOptions configure Check.
type CheckOptions struct {
	// ReadData downloads every pack and authenticates every blob.
	ReadData bool
	Progress func(done, total int, bytes int64)
}

// CheckReport is what Check found.
type CheckReport struct {
	OK bool `json:"ok"`
	*repo.CheckResult
}

// Check verifies the repository's structure (and data), under a shared
// lock. Damage is reported in the report and as a *Problems error.
func (s *Site) Check(ctx context.Context, o CheckOptions) (*CheckReport, error) {
	a := Access{}
	if o.ReadData {
		a.Reads = "repo check --read-data"
	}
	r, err := s.Open(ctx, a)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	lock, err := r.Lock(ctx, repo.LockShared, "check")
	if err != nil {
		return nil, err
	}
	defer lock.Unlock(context.WithoutCancel(ctx))
	res, err := r.Check(ctx, repo.CheckOptions{ReadData: o.ReadData, Progress: o.Progress})
	if err != nil {
		return nil, err
	}
	rep := &CheckReport{OK: len(res.Errors) == 0, CheckResult: res}
	if rep.Errors == nil {
		rep.Errors = []repo.Problem{}
	}
	if rep.Warnings == nil {
		rep.Warnings = []repo.Problem{}
	}
	return rep, nil
}

// Problem is the *Problems error of a check that found damage, or nil.
func (c *CheckReport) Problem() error {
	if len(c.Errors) == 0 {
		return nil
	}
	return problemsf("repository check found %d problems; first: %s", len(c.Errors), c.Errors[0])
}

// WALCheckReport is what CheckWAL found.
type WALCheckReport struct {
	*stream.GapReport
	// Start says where the check began: "backup <id>" (the backup with the
	// lowest start LSN) or "oldest WAL" when there is no backup.
	Start string `json:"start"`
}

// CheckWAL lists the WAL missing between the oldest base backup's start
// (the one with the lowest start LSN) and the newest WAL stored.
func CheckWAL(ctx context.Context, r *repo.Repository) (*WALCheckReport, error) {
	backups, err := backup.Backups(ctx, r)
	if err != nil {
		return nil, err
	}
	var opts stream.CheckOptions
	rep := &WALCheckReport{Start: "oldest WAL"}
	if oldest, ok := (&Catalog{Backups: backups}).Oldest(); ok {
		opts.StartTimeline, opts.StartLSN = oldest.Info.Timeline, oldest.Info.StartLSN
		rep.Start = "backup " + oldest.Snapshot.ShortID()
		if oldest.Info.Standalone {
			// Its WAL up to its stop is in the backup: the archive must
			// continue from there.
			opts.StartLSN, opts.SelfContained = oldest.Info.StopLSN, true
			rep.Start += " (standalone: from its stop)"
		}
	}
	if rep.GapReport, err = stream.CheckGaps(ctx, r, opts); err != nil {
		return nil, err
	}
	return rep, nil
}

// CheckWAL is CheckWAL on the site's repository.
func (s *Site) CheckWAL(ctx context.Context) (*WALCheckReport, error) {
	r, err := s.Open(ctx, Access{})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return CheckWAL(ctx, r)
}

// Gaps says in one line what is missing; "" when nothing is.
func (w *WALCheckReport) Gaps() string {
	g := w.GapReport
	if g.OK {
		return ""
	}
	var parts []string
	if n := len(g.Missing); n > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d segments missing between %s and %s (first %s)", n, g.SegmentsExpected, g.From, g.To, g.Missing[0]))
	}
	if n := len(g.MissingHistory); n > 0 {
		parts = append(parts, "history file "+strings.Join(g.MissingHistory, ", ")+" missing")
	}
	return strings.Join(parts, "; ") + ": recovery cannot pass the gap; take a new base backup (`pgvault backup`) to restore past it, and find out why archiving skipped it"
}

// Problem is the *Problems error of a check that found a gap, or nil.
func (w *WALCheckReport) Problem() error {
	if w.GapReport.OK {
		return nil
	}
	return problemsf("WAL archive has gaps: %s", w.Gaps())
}

// ListEntry is one base backup as `list` shows it.
type ListEntry struct {
	ID          string    `json:"id"`
	Label       string    `json:"label"`
	StartTime   time.Time `json:"start_time"`
	StopTime    time.Time `json:"stop_time"`
	Seconds     float64   `json:"seconds"`
	StartLSN    string    `json:"start_lsn"`
	StopLSN     string    `json:"stop_lsn"`
	Timeline    uint32    `json:"timeline"`
	Standalone  bool      `json:"standalone"`
	Bytes       int64     `json:"bytes"`
	StoredBytes int64     `json:"stored_bytes"`
	SystemID    string    `json:"system_identifier"`
	// ServerVersion is the server's version as the backup recorded it.
	ServerVersion string `json:"server_version"`
	// StartWAL and StopWAL name the segments holding StartLSN and StopLSN:
	// the WAL a restore of the backup needs at least.
	StartWAL string `json:"start_wal"`
	StopWAL  string `json:"stop_wal"`
	// Method is how the backup was taken: local, stream, or synthetic
	// (rolled forward from Parent by replaying the repository's WAL; it is
	// consistent at StopLSN).
	Method string `json:"method"`
	Parent string `json:"parent,omitempty"`
}

// List lists the base backups, oldest first.
func (s *Site) List(ctx context.Context) ([]ListEntry, error) {
	r, err := s.Open(ctx, Access{})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	backups, err := backup.Backups(ctx, r)
	if err != nil {
		return nil, err
	}
	entries := []ListEntry{}
	for _, b := range backups {
		sn, info := b.Snapshot, b.Info
		entries = append(entries, ListEntry{
			ID: sn.ID, Label: sn.Label, StartTime: sn.StartTime, StopTime: sn.EndTime,
			Seconds: sn.EndTime.Sub(sn.StartTime).Seconds(), StartLSN: info.StartLSN.String(), StopLSN: info.StopLSN.String(),
			Timeline: info.Timeline, Standalone: info.Standalone, Bytes: sn.Summary.Bytes, StoredBytes: sn.Summary.StoredBytes,
			SystemID: info.SystemIdentifier, Method: string(info.Method), Parent: info.Parent, ServerVersion: info.ServerVersion,
			StartWAL: wal.SegmentOf(info.Timeline, info.StartLSN, info.SegmentSize()).Name(info.SegmentSize()),
			StopWAL:  wal.SegmentOf(info.Timeline, info.StopLSN, info.SegmentSize()).Name(info.SegmentSize()),
		})
	}
	return entries, nil
}

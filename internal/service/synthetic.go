package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/fs/chunkread"
	"github.com/pgvault/pgvault/fs/overlay"
	"github.com/pgvault/pgvault/fs/verify"
	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/internal/pg/relmap"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// SyntheticOptions configure SyntheticBackup.
type SyntheticOptions struct {
	// From is the parent backup: an ID, a unique prefix, "" or "latest".
	From string
	// Target is where the new backup is consistent: an LSN or a time. The
	// zero value means the start of the newest WAL segment the repository
	// holds on the parent's timeline or its successors (the newest point
	// that is sure to have a record starting at or after it).
	Target wal.Target
	// PGBin is the folder of the parent's major's server programs ("":
	// found as verify --boot finds them).
	PGBin string
	// Owner is the OS user PostgreSQL runs as.
	Owner     string
	Timeout   time.Duration
	CacheSize int64
	Label     string
	Progress  func(phase string)
}

// SyntheticReport is what SyntheticBackup stored.
type SyntheticReport struct {
	BackupReport
	Parent string `json:"parent"`
	// ConsistentLSN is where the new backup is consistent (its stop LSN);
	// it needs WAL from its start LSN (the restartpoint's redo) to there.
	ConsistentLSN string `json:"consistent_lsn"`
	// Files counts what the replay changed: files created, modified (or
	// moved) and removed, against the parent.
	Files struct {
		Created  int `json:"created"`
		Modified int `json:"modified"`
		Removed  int `json:"removed"`
	} `json:"changed_files"`
	// Phases are seconds: mount, start, recovery, stop, store.
	Phases map[string]float64 `json:"phases"`
}

// ErrNothingToReplay is matched when the repository holds no WAL past the
// parent's consistency point.
var ErrNothingToReplay = errors.New("no WAL to roll the backup forward with")

// SyntheticBackup takes a backup without the database server: it mounts
// the parent in instant mode in private folders, starts PostgreSQL of the
// parent's major on it to replay the repository's WAL up to the target,
// has it make a restartpoint there and shut down in recovery, and stores
// the result as a new base backup. Only what the replay changed is read
// and stored (the overlay knows the ranges); every other chunk is the
// parent's. The snapshot is committed only when the replay and the store
// both succeeded: a failure leaves nothing listed.
func (s *Site) SyntheticBackup(ctx context.Context, o SyntheticOptions) (*SyntheticReport, error) {
	started := time.Now()
	owner, err := bootHost(o.Owner)
	if err != nil {
		return nil, err
	}
	r, err := s.openCached(ctx, o.CacheSize, "backup --synthetic")
	if err != nil {
		return nil, err
	}
	defer r.Close()
	lock, err := r.Lock(ctx, repo.LockShared, "synthetic backup")
	if err != nil {
		return nil, err
	}
	defer lock.Unlock(context.WithoutCancel(ctx))
	cat, err := LoadCatalog(ctx, r)
	if err != nil {
		return nil, err
	}
	target := o.Target
	if target.IsEnd() {
		if target, err = newestSegmentTarget(cat, o.From); err != nil {
			return nil, err
		}
	}
	// Exclusive: replay stops just before the first record at or after the
	// target, so the new backup is consistent at a record boundary with the
	// next record in WAL the repository holds. Inclusive, it could stop
	// after a segment switch, consistent at the end of a segment whose
	// successor a restore may not find yet.
	if target.HasInclusive() {
		target.Exclusive = true
	}
	rc := wal.RecoveryConfig{Target: target, Action: wal.ActionPause, Timeline: wal.TimelineGoal{Kind: wal.TimelineLatest}}
	// The planner refuses a gap, a missing history file or a target
	// before the parent's consistency point: nothing is started then.
	plan, parent, err := cat.PlanRestore(backup.PlanInput{Ref: o.From, Target: rc.Target, Timeline: rc.Timeline})
	if err != nil {
		return nil, err
	}
	info := plan.Backup.Info
	bin, err := verify.FindPGBin(o.PGBin, pg.Major(info.ServerVersion))
	if err != nil {
		return nil, err
	}

	rep := &SyntheticReport{Parent: parent.ID, Phases: map[string]float64{}}
	var at restartpoint
	var stored *repo.Snapshot
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	// recovery_prefetch off: the prefetcher advises the kernel of pages
	// that earlier full-page images create anyway, and every advice is a
	// read through the mount (18k of them in a 1% UPDATE at scale 100).
	// The writeback cache turns the replay's 8 KiB page writes into large
	// requests (115k of 122k requests before, recovery 19 s -> 10 s).
	br, err := verify.Boot(ctx, r, parent, verify.BootOptions{
		Owner: owner, PGBin: bin, Recovery: rc, SegmentSize: plan.SegmentSize,
		Settings: []wal.Setting{{Name: "archive_mode", Value: "off"}, {Name: "hot_standby", Value: "on"}, {Name: "recovery_prefetch", Value: "off"}},
		AmCheck:  "off", Timeout: o.Timeout, WritebackCache: true, Prefetcher: chunkread.NewPrefetcher(bg, r, 8, 16), Logger: s.log(), Progress: o.Progress,
		AtTarget: func(ctx context.Context, conninfo string) error {
			var err error
			at, err = makeRestartpoint(ctx, conninfo)
			return err
		},
		AfterStop: func(ctx context.Context, ov *overlay.Overlay) error {
			if o.Progress != nil {
				o.Progress("store")
			}
			t := time.Now()
			defer func() { rep.Phases["store"] = time.Since(t).Seconds() }()
			newInfo := syntheticInfo(info, parent.ID, at, plan.Timeline, started, o.Label)
			var err error
			stored, err = storeSynthetic(ctx, r, parent, ov, newInfo, map[string][]byte{relmap.Attachment: at.relations}, rep)
			return err
		},
	})
	if err != nil {
		return nil, fmt.Errorf("synthetic backup from %s: %w", parent.ShortID(), err)
	}
	for k, v := range br.Phases {
		rep.Phases[k] = v
	}
	if len(br.Problems) > 0 {
		p := br.Problems[0]
		if strings.Contains(br.LogTail, "Tablespace/CREATE") {
			return nil, fmt.Errorf("synthetic backup from %s: the WAL creates a tablespace, whose files PostgreSQL would write outside the backup, to its location on this host: a synthetic backup cannot replay it; take a base backup from the server (pgvault backup), after which synthetic backups from it work again; nothing was stored",
				parent.ShortID())
		}
		if strings.Contains(br.LogTail, "recovery ended before configured recovery target was reached") {
			return nil, fmt.Errorf("synthetic backup from %s: the WAL in the repository ends before a record at or after the target %s, where replay would stop: give an earlier target, or wait until more WAL is stored; nothing was stored",
				parent.ShortID(), rc.Target)
		}
		return nil, fmt.Errorf("synthetic backup from %s: the replay failed, nothing was stored: %s: %s (server log, last lines: %s)",
			parent.ShortID(), p.Object, p.Message, oneLine(br.LogTail))
	}
	if stored == nil {
		return nil, fmt.Errorf("synthetic backup from %s: the server did not stop cleanly at the target, nothing was stored", parent.ShortID())
	}
	var si backup.Info
	if err := json.Unmarshal(stored.Meta, &si); err != nil {
		return nil, err
	}
	d := time.Since(started)
	rep.BackupReport = BackupReport{
		ID: stored.ID, Label: stored.Label, StartLSN: si.StartLSN.String(), StopLSN: si.StopLSN.String(),
		Timeline: si.Timeline, Method: string(backup.MethodSynthetic), BytesRead: si.BytesRead,
		StoredBytes: stored.Summary.StoredBytes, Files: stored.Summary.Files, Chunks: stored.Summary.Chunks, NewChunks: stored.Summary.NewChunks,
		Seconds: d.Seconds(), MBPerSecond: MBPerSecond(si.BytesRead, d), Warnings: []string{},
		Backup: backup.Backup{Snapshot: stored, Info: &si},
	}
	rep.ConsistentLSN = si.StopLSN.String()
	return rep, nil
}

// newestSegmentTarget is the default target: the start of the newest WAL
// segment recovery from the parent reaches. A record starts at or after it
// in any segment the repository holds whole (16 MiB of WAL), so recovery
// reaches it; the newest partial segment may hold only the rest of a
// record that began before it.
func newestSegmentTarget(cat *Catalog, from string) (wal.Target, error) {
	plan, _, err := cat.PlanRestore(backup.PlanInput{Ref: from, Timeline: wal.TimelineGoal{Kind: wal.TimelineLatest}})
	if err != nil {
		return wal.Target{}, err
	}
	var newest wal.Segment
	partial := map[string]bool{}
	for _, p := range plan.Partial {
		partial[p] = true
	}
	for _, run := range plan.WAL {
		for _, sg := range run.Segments() {
			if partial[sg.PartialName(plan.SegmentSize)] {
				continue
			}
			newest = sg
		}
	}
	lsn := newest.Start(plan.SegmentSize)
	if newest.Timeline == 0 || lsn <= plan.Backup.Info.StopLSN {
		return wal.Target{}, fmt.Errorf("%w: the repository holds no complete WAL segment after backup %s's end (%s): stream or archive more WAL, or give --to-lsn",
			ErrNothingToReplay, ShortID(plan.Backup.ID), plan.Backup.Info.StopLSN)
	}
	return wal.LSNTarget(lsn), nil
}

// restartpoint is where a replay stopped and the restartpoint made there.
type restartpoint struct {
	consistent pglogrepl.LSN // replayed up to here
	redo       pglogrepl.LSN // the restartpoint's redo: WAL is needed from here
	timeline   uint32
	// lastCommit is the time of the last transaction replayed (zero when
	// none was): a restore to a time at or after it may start from the
	// new backup.
	lastCommit time.Time
	// databases are the replayed cluster's, for partial restores, and
	// relations its relation map (encoded), for the browse mount.
	databases []backup.Database
	relations []byte
}

// makeRestartpoint asks the server, paused at its recovery target, where
// replay stopped, has it write a restartpoint there (CHECKPOINT during
// recovery), and reads the restartpoint back from pg_control. The
// shutdown that follows writes no newer one: no checkpoint record is
// replayed after it.
func makeRestartpoint(ctx context.Context, conninfo string) (restartpoint, error) {
	var at restartpoint
	conn, err := pgx.Connect(ctx, conninfo)
	if err != nil {
		return at, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var replay string
	var commit *time.Time
	if err := conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()").Scan(&replay, &commit); err != nil {
		return at, fmt.Errorf("read the replay position: %w", err)
	}
	if commit != nil {
		at.lastCommit = commit.UTC()
	}
	if at.databases, err = backup.ListDatabases(ctx, conn.PgConn()); err != nil {
		return at, fmt.Errorf("the replayed cluster: %w", err)
	}
	m, err := relmap.Capture(ctx, func(ctx context.Context, db string) (*pgconn.PgConn, error) {
		if db == "" {
			return pgconn.Connect(ctx, conninfo)
		}
		return pgconn.Connect(ctx, conninfo+" dbname="+pg.QuoteConnValue(db))
	})
	if err == nil {
		at.relations, err = m.Encode()
	}
	if err != nil {
		return at, fmt.Errorf("the replayed cluster's relations: %w", err)
	}
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return at, fmt.Errorf("restartpoint: %w", err)
	}
	var redo, minRecovery string
	var tli int64
	if err := conn.QueryRow(ctx, `SELECT c.redo_lsn::text, c.timeline_id, r.min_recovery_end_lsn::text
		FROM pg_control_checkpoint() c, pg_control_recovery() r`).Scan(&redo, &tli, &minRecovery); err != nil {
		return at, fmt.Errorf("read the restartpoint: %w", err)
	}
	if at.consistent, err = pglogrepl.ParseLSN(replay); err != nil {
		return at, err
	}
	// A restore is consistent once past pg_control's minimum recovery
	// point, which the restartpoint may have moved past the replay
	// position: the later of the two.
	if mr, err := pglogrepl.ParseLSN(minRecovery); err == nil && mr > at.consistent {
		at.consistent = mr
	}
	if at.redo, err = pglogrepl.ParseLSN(redo); err != nil {
		return at, err
	}
	at.timeline = uint32(tli)
	return at, nil
}

// syntheticInfo describes the new backup: the parent's cluster, consistent
// at the replay's end, needing WAL from the restartpoint's redo. Its stop
// time is the last replayed commit's (the planner restores to a time from
// the newest backup that stopped before it, and a time target only stops
// at commits), or the parent's when the replay committed nothing.
func syntheticInfo(parent *backup.Info, parentID string, at restartpoint, stopTimeline uint32, started time.Time, label string) *backup.Info {
	now := time.Now().UTC()
	if label == "" {
		label = fmt.Sprintf("synthetic from %s %s", ShortID(parentID), now.Format(time.RFC3339))
	}
	stop := parent.StopTime
	if at.lastCommit.After(stop) {
		stop = at.lastCommit
	}
	return &backup.Info{
		SystemIdentifier: parent.SystemIdentifier, ServerVersion: parent.ServerVersion,
		Timeline: at.timeline, StartLSN: at.redo, StopLSN: at.consistent, StopTimeline: stopTimeline,
		StartTime: started.UTC(), StopTime: stop, Label: label,
		Tablespaces: parent.Tablespaces, Method: backup.MethodSynthetic, WALSegmentSize: parent.WALSegmentSize,
		Parent: parentID, Databases: at.databases,
	}
}

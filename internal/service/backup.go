package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/repo"
)

// Connector opens a replication connection to the cluster a workflow
// backs up, and returns its configuration (for messages and for the plain
// session a local backup opens beside it). The CLI connects to --pg; the
// agent tries a site's nodes in order and raises its alerts as it goes.
type Connector func(ctx context.Context) (*pgconn.PgConn, *pgconn.Config, error)

// ConnectTo is the Connector of one connection string: a replication
// connection with the given application_name ("" keeps the string's, or
// "pgvault").
func ConnectTo(conninfo, applicationName string) (Connector, error) {
	cfg, err := pg.ParseConfig(conninfo)
	if err != nil {
		return nil, err
	}
	cfg = pg.Replication(cfg, applicationName)
	return func(ctx context.Context) (*pgconn.PgConn, *pgconn.Config, error) {
		conn, err := pg.Connect(ctx, cfg)
		return conn, cfg, err
	}, nil
}

// ConnectToNodes is the Connector of a list of connection strings tried
// in order (a site's nodes): the first that answers. password, when set,
// is used where a string gives none.
func ConnectToNodes(conninfos []string, password, applicationName string) (Connector, error) {
	if len(conninfos) == 0 {
		return nil, fmt.Errorf("%w: no PostgreSQL connection string", pg.ErrBadConninfo)
	}
	cfgs := make([]*pgconn.Config, len(conninfos))
	for i, ci := range conninfos {
		cfg, err := pg.ParseConfig(ci)
		if err != nil {
			return nil, err
		}
		if cfg.Password == "" {
			cfg.Password = password
		}
		cfgs[i] = pg.Replication(cfg, applicationName)
	}
	return func(ctx context.Context) (*pgconn.PgConn, *pgconn.Config, error) {
		var err error
		for _, cfg := range cfgs {
			var conn *pgconn.PgConn
			if conn, err = pg.Connect(ctx, cfg); err == nil {
				return conn, cfg, nil
			}
		}
		return nil, cfgs[len(cfgs)-1], err
	}, nil
}

// BackupOptions configure Backup.
type BackupOptions struct {
	Label          string
	FastCheckpoint bool
	Standalone     bool
	MaxRateKB      int
	Method         backup.Method
	// DataDir is where a local backup reads the files ("": where the server
	// says its data directory is).
	DataDir string
	// Holder names the lock's holder ("backup", "agent backup of site x").
	Holder   string
	Progress func(backup.Progress)
}

// BackupReport is what Backup did.
type BackupReport struct {
	ID               string   `json:"id"`
	Label            string   `json:"label"`
	StartLSN         string   `json:"start_lsn"`
	StopLSN          string   `json:"stop_lsn"`
	Timeline         uint32   `json:"timeline"`
	Standalone       bool     `json:"standalone"`
	Method           string   `json:"method"`
	BytesRead        int64    `json:"bytes_read"`
	StoredBytes      int64    `json:"stored_bytes"`
	Files            int64    `json:"files"`
	Chunks           int64    `json:"chunks"`
	NewChunks        int64    `json:"new_chunks"`
	Seconds          float64  `json:"seconds"`
	MBPerSecond      float64  `json:"mb_per_second"`
	Warnings         []string `json:"warnings"`
	ChecksumFailures bool     `json:"checksum_failures"`

	// Backup is the stored backup, for callers that keep state about it.
	Backup backup.Backup `json:"-"`
}

// Backup takes a base backup of the cluster connect reaches into the
// site's repository, under a shared lock. A PostgreSQL error comes back
// explained (pg.Explain), still unwrapping to its cause.
func (s *Site) Backup(ctx context.Context, connect Connector, o BackupOptions) (*BackupReport, error) {
	r, err := s.Open(ctx, Access{})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	holder := o.Holder
	if holder == "" {
		holder = "backup"
	}
	lock, err := r.Lock(ctx, repo.LockShared, holder)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock(context.WithoutCancel(ctx))
	conn, cfg, err := connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	res, err := backup.Take(ctx, conn, r, backup.Options{
		Label: o.Label, FastCheckpoint: o.FastCheckpoint, Standalone: o.Standalone, MaxRateKB: o.MaxRateKB,
		Method: o.Method, DataDir: o.DataDir, Session: backup.SessionFor(cfg), Progress: o.Progress,
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			return nil, pg.Explain(err, cfg)
		}
		return nil, err
	}
	snap, info := res.Snapshot, res.Info
	rep := &BackupReport{
		ID: snap.ID, Label: snap.Label, StartLSN: info.StartLSN.String(), StopLSN: info.StopLSN.String(),
		Timeline: info.Timeline, Standalone: info.Standalone, Method: string(info.Method), BytesRead: info.BytesRead,
		StoredBytes: snap.Summary.StoredBytes, Files: snap.Summary.Files, Chunks: snap.Summary.Chunks, NewChunks: snap.Summary.NewChunks,
		Seconds: res.Duration.Seconds(), MBPerSecond: MBPerSecond(info.BytesRead, res.Duration),
		Warnings: nonNil(info.Warnings), ChecksumFailures: info.ChecksumFailures,
		Backup: backup.Backup{Snapshot: snap, Info: info},
	}
	return rep, nil
}

// ChecksumProblem is the error a backup with failing page checksums ends
// in: the backup is stored, and a check found a problem.
func (r *BackupReport) ChecksumProblem() error {
	if !r.ChecksumFailures {
		return nil
	}
	return problemsf("backup %s is stored, but PostgreSQL found pages failing checksum verification: %s",
		ShortID(r.ID), joinSemi(r.Warnings))
}

// MBPerSecond is a rate in decimal megabytes per second.
func MBPerSecond(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / 1e6 / d.Seconds()
}

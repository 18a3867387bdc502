package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/backup"

	"github.com/pgvault/pgvault/repo"
)

type backupOptions struct {
	label          string
	fastCheckpoint bool
	standalone     bool
	maxRateKB      int
	method         string
	pgdata         string
}

func backupCommand() *cli.Command {
	var o backupOptions
	return &cli.Command{
		Name:  "backup",
		Usage: "take a base backup over the replication protocol into the repository",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "label", Destination: &o.label, Usage: "backup `LABEL` (default: pgvault and the time)"},
			&cli.BoolFlag{Name: "fast-checkpoint", Destination: &o.fastCheckpoint,
				Usage: "ask for an immediate checkpoint instead of a spread one (starts sooner, costs a burst of I/O)"},
			&cli.BoolFlag{Name: "standalone", Destination: &o.standalone,
				Usage: "also store the WAL from start to stop, so the backup restores and starts without a WAL archive"},
			&cli.IntFlag{Name: "max-rate", Destination: &o.maxRateKB, Usage: "throttle the server to `KB` kB/s (32..1048576)"},
			&cli.StringFlag{Name: "method", Value: "auto", Destination: &o.method,
				Usage: "`HOW` to read the files: local (from the data directory on this machine, between pg_backup_start and pg_backup_stop), " +
					"stream (BASE_BACKUP over the replication connection) or auto (local when this machine can read the data directory)"},
			&cli.StringFlag{Name: "pgdata", Destination: &o.pgdata, EnvVars: []string{"PGDATA"},
				Usage: "the data directory `PATH` a local backup reads (default: the server's data_directory)"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if c.NArg() > 0 {
				return usagef("backup takes no arguments (got %q)", c.Args().First())
			}
			if o.maxRateKB != 0 && (o.maxRateKB < 32 || o.maxRateKB > 1048576) {
				return usagef("--max-rate %d: must be between 32 and 1048576 kB/s", o.maxRateKB)
			}
			method, err := backup.ParseMethod(o.method)
			if err != nil {
				return usagef("--method: %v", err)
			}
			if method == backup.MethodLocal && (o.standalone || o.maxRateKB != 0) {
				return usagef("--method local reads the files itself: --standalone and --max-rate need --method stream")
			}
			return runBackup(c.Context, e, o)
		},
	}
}

type backupReport struct {
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
}

func runBackup(ctx context.Context, e *env, o backupOptions) error {
	r, err := e.openRepo(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	lock, err := r.Lock(ctx, repo.LockShared, "backup")
	if err != nil {
		return err
	}
	defer lock.Unlock(context.WithoutCancel(ctx))
	conn, cfg, err := e.connectReplication(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	bar := newProgress(e.out, e.stderr, "backup")
	res, err := backup.Take(ctx, conn, r, backup.Options{
		Label: o.label, FastCheckpoint: o.fastCheckpoint, Standalone: o.standalone, MaxRateKB: o.maxRateKB,
		Method: backup.Method(o.method), DataDir: o.pgdata, Session: backup.SessionFor(cfg),
		Progress: func(p backup.Progress) { bar.update(p.BytesDone, p.BytesTotal, "bytes") },
	})
	bar.done()
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			return explainPG(err, cfg)
		}
		return err
	}
	s, info := res.Snapshot, res.Info
	rep := backupReport{
		ID: s.ID, Label: s.Label, StartLSN: info.StartLSN.String(), StopLSN: info.StopLSN.String(),
		Timeline: info.Timeline, Standalone: info.Standalone, Method: string(info.Method), BytesRead: info.BytesRead,
		StoredBytes: s.Summary.StoredBytes, Files: s.Summary.Files, Chunks: s.Summary.Chunks, NewChunks: s.Summary.NewChunks,
		Seconds:     res.Duration.Seconds(),
		MBPerSecond: mbPerSec(info.BytesRead, res.Duration), Warnings: info.Warnings, ChecksumFailures: info.ChecksumFailures,
	}
	if rep.Warnings == nil {
		rep.Warnings = []string{}
	}
	if err := e.out.emit(rep, func(w io.Writer) {
		for _, msg := range info.Warnings {
			fmt.Fprintf(w, "warning: %s\n", msg)
		}
		fmt.Fprintf(w, "backup %s done: %s read, %s new stored after dedup and compression, %.1fs (%.0f MB/s)\n",
			s.ShortID(), humanBytes(info.BytesRead), humanBytes(s.Summary.StoredBytes), res.Duration.Seconds(), rep.MBPerSecond)
		fmt.Fprintf(w, "WAL %s .. %s on timeline %d", info.StartLSN, info.StopLSN, info.Timeline)
		if info.Standalone {
			fmt.Fprint(w, " (included: restores without an archive)")
		}
		fmt.Fprintln(w)
	}); err != nil {
		return err
	}
	if info.ChecksumFailures {
		return problemsError{fmt.Sprintf("backup %s is stored, but PostgreSQL found pages failing checksum verification: %s", s.ShortID(), strings.Join(info.Warnings, "; "))}
	}
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/internal/service"
)

type backupOptions struct {
	label          string
	fastCheckpoint bool
	standalone     bool
	maxRateKB      int
	method         string
	pgdata         string

	// Synthetic backups: no database connection.
	synthetic     bool
	from          string
	toLSN, toTime string
	pgBin, owner  string
	timeout       time.Duration
	cacheSize     string
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
			&cli.BoolFlag{Name: "synthetic", Destination: &o.synthetic,
				Usage: "roll a backup forward from the WAL already in the repository, without connecting to the database: PostgreSQL (of the backup's major, on this host) replays it on an instant mount of --from"},
			&cli.StringFlag{Name: "from", Destination: &o.from, Value: "latest", Usage: "with --synthetic: the parent backup `ID` (or latest)"},
			&cli.StringFlag{Name: "to-lsn", Destination: &o.toLSN, Usage: "with --synthetic: make the new backup consistent at WAL location `LSN` (default: the start of the newest WAL segment stored)"},
			&cli.StringFlag{Name: "to", Destination: &o.toTime, Usage: "with --synthetic: make the new backup consistent at `TIME`"},
			&cli.StringFlag{Name: "pg-bin", Destination: &o.pgBin, Usage: "with --synthetic: `DIR` of the backup's major's pg_ctl and postgres (default: as verify --boot finds them)"},
			&cli.StringFlag{Name: "owner", Destination: &o.owner, Value: "postgres", Usage: "with --synthetic: OS `USER` PostgreSQL runs as"},
			&cli.DurationFlag{Name: "timeout", Destination: &o.timeout, Value: time.Hour, Usage: "with --synthetic: give up if the replay has not reached the target after this `LONG`"},
			// 64 MiB: the process's peak memory follows the cache one
			// for one on top of about 160 MB. With 128 MiB a synthetic
			// backup at pgbench scale 100 peaked at 296-305 MB, over the
			// 300 MB every command must stay under; with 64 MiB at
			// 228-237 MB, and no slower (docs/benchmarks.md).
			&cli.StringFlag{Name: "cache-size", Destination: &o.cacheSize, Value: "64MiB", Usage: "with --synthetic: `SIZE` of the in-memory chunk cache"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if c.NArg() > 0 {
				return usagef("backup takes no arguments (got %q)", c.Args().First())
			}
			if o.synthetic {
				for flag, set := range map[string]bool{"--standalone": o.standalone, "--max-rate": o.maxRateKB != 0, "--fast-checkpoint": o.fastCheckpoint,
					"--method": c.IsSet("method"), "--pgdata": c.IsSet("pgdata")} {
					if set {
						return usagef("--synthetic reads nothing from the database server: %s does not apply", flag)
					}
				}
				return runSyntheticBackup(c.Context, e, o)
			}
			for flag, set := range map[string]bool{"--from": c.IsSet("from"), "--to-lsn": o.toLSN != "", "--to": o.toTime != "", "--pg-bin": o.pgBin != ""} {
				if set {
					return usagef("%s needs --synthetic", flag)
				}
			}
			if o.maxRateKB != 0 && (o.maxRateKB < 32 || o.maxRateKB > 1048576) {
				return usagef("--max-rate %d: must be between 32 and 1048576 kB/s", o.maxRateKB)
			}
			method, err := backup.ParseMethod(o.method)
			if err != nil {
				return usagef("--method: %v", err)
			}
			if method == backup.MethodLocal && o.maxRateKB != 0 {
				return usagef("--method local reads the files itself: --max-rate throttles BASE_BACKUP and needs --method stream")
			}
			return runBackup(c.Context, e, o)
		},
	}
}

func runBackup(ctx context.Context, e *env, o backupOptions) error {
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	connect, err := service.ConnectTo(e.c.String("pg"), "")
	if err != nil {
		return fmt.Errorf("--pg: %w", err)
	}
	return backupTo(ctx, e, site, connect, o)
}

// backupTo takes a base backup of the cluster connect reaches into site.
func backupTo(ctx context.Context, e *env, site *service.Site, connect service.Connector, o backupOptions) error {
	bar := newProgress(e.out, e.stderr, "backup")
	rep, err := site.Backup(ctx, connect, service.BackupOptions{
		Label: o.label, FastCheckpoint: o.fastCheckpoint, Standalone: o.standalone, MaxRateKB: o.maxRateKB,
		Method: backup.Method(o.method), DataDir: o.pgdata,
		Progress: func(p backup.Progress) { bar.update(p.BytesDone, p.BytesTotal, "bytes") },
	})
	bar.done()
	if err != nil {
		return err
	}
	if err := e.out.emit(rep, func(w io.Writer) {
		for _, msg := range rep.Warnings {
			fmt.Fprintf(w, "warning: %s\n", msg)
		}
		fmt.Fprintf(w, "backup %s done: %s read, %s new stored after dedup and compression, %.1fs (%.0f MB/s)\n",
			service.ShortID(rep.ID), service.HumanBytes(rep.BytesRead), service.HumanBytes(rep.StoredBytes), rep.Seconds, rep.MBPerSecond)
		fmt.Fprintf(w, "WAL %s .. %s on timeline %d", rep.StartLSN, rep.StopLSN, rep.Timeline)
		if rep.Standalone {
			fmt.Fprint(w, " (included: restores without an archive)")
		}
		fmt.Fprintln(w)
	}); err != nil {
		return err
	}
	return rep.ChecksumProblem()
}

func runSyntheticBackup(ctx context.Context, e *env, o backupOptions) error {
	var target wal.Target
	switch {
	case o.toLSN != "" && o.toTime != "":
		return usagef("--to-lsn and --to: give one target")
	case o.toLSN != "":
		lsn, err := wal.ParseTargetLSN(o.toLSN)
		if err != nil {
			return usageError{fmt.Errorf("--to-lsn: %w", err)}
		}
		target = wal.LSNTarget(lsn)
	case o.toTime != "":
		t, err := wal.ParseTargetTimeAt(o.toTime, time.Local, time.Now())
		if err != nil {
			return usageError{fmt.Errorf("--to: %w", err)}
		}
		target = wal.TimeTarget(t)
	}
	cacheSize, err := parseByteSize(o.cacheSize)
	if err != nil {
		return usagef("--cache-size: %v", err)
	}
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	rep, err := site.SyntheticBackup(ctx, service.SyntheticOptions{
		From: o.from, Target: target, PGBin: o.pgBin, Owner: o.owner, Timeout: o.timeout, CacheSize: cacheSize, Label: o.label,
		Progress: func(p string) { e.log.Info("synthetic backup", "phase", p) },
	})
	if errors.Is(err, service.ErrNothingToReplay) && target.IsEnd() {
		// Nothing to do is not a failure: the agent asks on a schedule.
		skipped := struct {
			Skipped bool   `json:"skipped"`
			Reason  string `json:"reason"`
		}{true, err.Error()}
		return e.out.emit(skipped, func(w io.Writer) { fmt.Fprintf(w, "no synthetic backup taken: %v\n", err) })
	}
	if err != nil {
		return err
	}
	return e.out.emit(rep, func(w io.Writer) {
		fmt.Fprintf(w, "synthetic backup %s from %s done: %d files created, %d changed, %d removed by the replay; %s read from the replay, %s new stored, %.1fs\n",
			service.ShortID(rep.ID), service.ShortID(rep.Parent), rep.Files.Created, rep.Files.Modified, rep.Files.Removed,
			service.HumanBytes(rep.BytesRead), service.HumanBytes(rep.StoredBytes), rep.Seconds)
		fmt.Fprintf(w, "consistent at %s on timeline %d; restores need WAL from %s\n", rep.ConsistentLSN, rep.Timeline, rep.StartLSN)
	})
}

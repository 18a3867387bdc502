package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/internal/service"
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

func runBackup(ctx context.Context, e *env, o backupOptions) error {
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	connect, err := service.ConnectTo(e.c.String("pg"), "")
	if err != nil {
		return fmt.Errorf("--pg: %w", err)
	}
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

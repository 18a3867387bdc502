package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/internal/service"
)

type verifyOptions struct {
	target       restoreOptions // --to*, --target-exclusive, --timeline
	targetAction string
	boot         bool
	sql          string
	pgBin        string
	owner        string
	dbUser       string
	amcheck      string
	timeout      time.Duration
	cacheSize    string
	keep         bool
	pgSettings   []string
}

func verifyCommand() *cli.Command {
	var o verifyOptions
	var settings cli.StringSlice
	return &cli.Command{
		Name:  "verify",
		Usage: "prove a backup restores: read and authenticate every chunk it and its WAL need, or (--boot) start PostgreSQL on it and check it",
		Description: "Without --boot: every chunk of the backup and of the WAL its recovery needs (to the target, or to the end of the archive) is read and\n" +
			"authenticated. With --boot: the backup is mounted in instant mode in temporary folders, PostgreSQL started on it as --owner,\n" +
			"recovery awaited, pg_amcheck and --sql run, and everything stopped and removed. Exit 3 when a problem is found.",
		ArgsUsage: "[ID|latest]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "boot", Destination: &o.boot, Usage: "start PostgreSQL on an instant mount of the backup and check it"},
			&cli.StringFlag{Name: "sql", Destination: &o.sql, Usage: "with --boot: `QUERY` that must succeed (its first row is printed)"},
			&cli.StringFlag{Name: "pg-bin", Destination: &o.pgBin, Usage: "`DIR` of pg_ctl and postgres (default: pg_config, then /usr/lib/postgresql/<major>/bin)"},
			&cli.StringFlag{Name: "owner", Destination: &o.owner, Value: "postgres", Usage: "OS `USER` PostgreSQL runs as"},
			&cli.StringFlag{Name: "db-user", Destination: &o.dbUser, Usage: "database `ROLE` to connect as (default: --owner)"},
			&cli.StringFlag{Name: "amcheck", Destination: &o.amcheck, Value: "on", Usage: "pg_amcheck `MODE`: on (heap and B-tree structure), full (also --heapallindexed) or off"},
			&cli.DurationFlag{Name: "timeout", Destination: &o.timeout, Value: 10 * time.Minute, Usage: "give up if PostgreSQL has not recovered after this `LONG`"},
			&cli.StringFlag{Name: "cache-size", Destination: &o.cacheSize, Value: "128MiB", Usage: "`SIZE` of the in-memory chunk cache"},
			&cli.BoolFlag{Name: "keep", Destination: &o.keep, Usage: "with --boot: keep the temporary folders (overlay, server log)"},
			&cli.StringSliceFlag{Name: "pg-setting", Destination: &settings, Usage: "with --boot: extra server `NAME=VALUE` (e.g. shared_buffers=128MB), repeatable"},
			&cli.StringFlag{Name: "to", Destination: &o.target.toTime, Usage: "verify recovery to `TIME`"},
			&cli.StringFlag{Name: "to-lsn", Destination: &o.target.toLSN, Usage: "verify recovery to WAL location `LSN`"},
			&cli.StringFlag{Name: "to-xid", Destination: &o.target.toXID, Usage: "verify recovery to transaction `XID`"},
			&cli.StringFlag{Name: "to-name", Destination: &o.target.toName, Usage: "verify recovery to restore point `NAME`"},
			&cli.BoolFlag{Name: "to-immediate", Destination: &o.target.toImmediate, Usage: "verify only the backup itself (recovery to consistency)"},
			&cli.BoolFlag{Name: "target-exclusive", Destination: &o.target.exclusive, Usage: "stop just before the target"},
			&cli.StringFlag{Name: "target-action", Destination: &o.targetAction, Value: "promote", Usage: "with --boot: `ACTION` at the target: promote or pause"},
			&cli.StringFlag{Name: "timeline", Destination: &o.target.timeline, Value: "latest", Usage: "timeline to recover along: `latest`, current or an ID"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if c.NArg() > 1 {
				return usagef("verify takes one backup ID (got %d arguments)", c.NArg())
			}
			o.pgSettings = settings.Value()
			return runVerify(c.Context, e, c.Args().First(), o)
		},
	}
}

func runVerify(ctx context.Context, e *env, ref string, o verifyOptions) error {
	switch o.amcheck {
	case "on", "off", "full":
	default:
		return usagef("--amcheck %q: use on, full or off", o.amcheck)
	}
	if !o.boot && (o.sql != "" || o.keep || len(o.pgSettings) > 0) {
		return usagef("--sql, --keep and --pg-setting need --boot")
	}
	for _, kv := range o.pgSettings {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return usagef("--pg-setting %q: use NAME=VALUE", kv)
		}
	}
	cacheSize, err := parseByteSize(o.cacheSize)
	if err != nil {
		return usagef("--cache-size: %v", err)
	}
	rc, err := recoveryFromFlags(o.target)
	if err != nil {
		return err
	}
	if !rc.Target.IsEnd() {
		a, err := wal.ParseTargetAction(o.targetAction)
		if err != nil || a == wal.ActionShutdown {
			return usagef("--target-action %q: use promote or pause", o.targetAction)
		}
		rc.Action = a
	}
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	bar := newProgress(e.out, e.stderr, "verify")
	rep, err := site.Verify(ctx, service.VerifyOptions{
		Ref: ref, Recovery: rc, Boot: o.boot, PGBin: o.pgBin, Owner: o.owner, DBUser: o.dbUser, AmCheck: o.amcheck,
		SQL: o.sql, ServerSettings: o.pgSettings, Timeout: o.timeout, Keep: o.keep, CacheSize: cacheSize,
		Progress: func(done, total int64) { bar.update(done, total, "bytes") },
		Phase:    func(p string) { e.out.event("phase", map[string]any{"task": "verify", "phase": p}) },
	})
	bar.done()
	if err != nil {
		return err
	}
	if err := e.out.emit(rep, func(w io.Writer) { printVerify(w, service.ShortID(rep.ID), rep) }); err != nil {
		return err
	}
	return rep.Problem()
}

func printVerify(w io.Writer, id string, rep *service.VerifyReport) {
	if c := rep.Chunks; c != nil {
		fmt.Fprintf(w, "backup %s: read %d files and %d WAL files: %d distinct chunks, %s, in %.1fs\n",
			id, c.Files, c.WALFiles, c.Chunks, service.HumanBytes(c.Bytes), c.Duration.Seconds())
	}
	if b := rep.Boot; b != nil {
		fmt.Fprintf(w, "backup %s booted (%s): mount %.2fs, start %.2fs, recovery %.2fs, amcheck %.2fs (%s), sql %.2fs, stop %.2fs\n",
			id, rep.Target, b.Phases["mount"], b.Phases["start"], b.Phases["recovery"], b.Phases["amcheck"], b.AmCheck,
			b.Phases["sql"], b.Phases["stop"])
		if b.Reached != "" {
			fmt.Fprintf(w, "recovery %s; %s read from the repository\n", b.Reached, service.HumanBytes(b.Overlay.BaseBytesRead))
		}
		if b.SQLRow != nil {
			fmt.Fprintf(w, "sql first row: %s\n", strings.Join(b.SQLRow, " | "))
		}
		if b.LogTail != "" {
			fmt.Fprintf(w, "server log (last lines):\n%s\n", b.LogTail)
		}
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	if rep.OK {
		fmt.Fprintf(w, "backup %s: OK\n", id)
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/pgvault/pgvault/internal/pgdump"
	"github.com/pgvault/pgvault/internal/service"
)

type dumpOptions struct {
	target     restoreOptions // --to*, --target-exclusive, --timeline
	backup     string
	tables     []string
	db         string
	globals    bool
	format     string
	schemaOnly bool
	dataOnly   bool
	file       string
	pgBin      string
	pgDump     string
	owner      string
	dbUser     string
	timeout    time.Duration
	cacheSize  string
}

func dumpCommand() *cli.Command {
	var o dumpOptions
	var tables cli.StringSlice
	return &cli.Command{
		Name:  "dump",
		Usage: "pg_dump tables, a database or the globals out of a backup at any point in time, without restoring it",
		Description: "The backup is mounted in instant mode in private folders, PostgreSQL started on it (a private socket, no TCP) and recovered to\n" +
			"the target (default: the end of the WAL stored), pg_dump run against it, and everything stopped and removed. The dump goes to\n" +
			"-f FILE or standard output (pgvault dump ... | psql, or --format custom | pg_restore -d DB); the report to standard error then.\n" +
			"Without --db, the one database holding the --table names is dumped from.",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "table", Aliases: []string{"t"}, Destination: &tables, Usage: "`SCHEMA.TABLE` to dump (repeatable; TABLE alone is public.TABLE; double-quote names with capitals or dots)"},
			&cli.StringFlag{Name: "db", Aliases: []string{"d"}, Destination: &o.db, Usage: "`DATABASE` to dump from (alone: the whole database)"},
			&cli.BoolFlag{Name: "globals", Destination: &o.globals, Usage: "dump roles and tablespaces (pg_dumpall --globals-only)"},
			&cli.StringFlag{Name: "backup", Destination: &o.backup, Value: "latest", Usage: "backup `ID` (default: the newest one that serves the target)"},
			&cli.StringFlag{Name: "format", Aliases: []string{"F"}, Destination: &o.format, Value: "plain", Usage: "pg_dump's `FORMAT`: plain (SQL), custom (for pg_restore) or directory (needs -f)"},
			&cli.BoolFlag{Name: "schema-only", Aliases: []string{"s"}, Destination: &o.schemaOnly, Usage: "only the definitions"},
			&cli.BoolFlag{Name: "data-only", Aliases: []string{"a"}, Destination: &o.dataOnly, Usage: "only the rows"},
			&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Destination: &o.file, Usage: "write the dump to `FILE` (a new folder for --format directory) instead of standard output"},
			&cli.StringFlag{Name: "to", Destination: &o.target.toTime, Usage: "dump as of `TIME`"},
			&cli.StringFlag{Name: "to-lsn", Destination: &o.target.toLSN, Usage: "dump as of WAL location `LSN`"},
			&cli.StringFlag{Name: "to-xid", Destination: &o.target.toXID, Usage: "dump as of the commit of transaction `XID`"},
			&cli.StringFlag{Name: "to-name", Destination: &o.target.toName, Usage: "dump as of restore point `NAME`"},
			&cli.BoolFlag{Name: "to-immediate", Destination: &o.target.toImmediate, Usage: "dump the backup itself (recovered only to consistency)"},
			&cli.BoolFlag{Name: "target-exclusive", Destination: &o.target.exclusive, Usage: "stop just before the target"},
			&cli.StringFlag{Name: "timeline", Destination: &o.target.timeline, Value: "latest", Usage: "timeline to recover along: `latest`, current or an ID"},
			&cli.StringFlag{Name: "pg-bin", Destination: &o.pgBin, Usage: "`DIR` of the backup's major's pg_ctl and postgres (default: as verify --boot finds them)"},
			&cli.StringFlag{Name: "pg-dump", Destination: &o.pgDump, Usage: "`DIR` of pg_dump and pg_dumpall, of the backup's major or newer (default: beside the server's programs, else the newest installed)"},
			&cli.StringFlag{Name: "owner", Destination: &o.owner, Value: "postgres", Usage: "OS `USER` PostgreSQL runs as"},
			&cli.StringFlag{Name: "db-user", Destination: &o.dbUser, Usage: "database `ROLE` pg_dump connects as (default: --owner)"},
			&cli.DurationFlag{Name: "timeout", Destination: &o.timeout, Value: time.Hour, Usage: "give up if PostgreSQL has not reached the target after this `LONG`"},
			&cli.StringFlag{Name: "cache-size", Destination: &o.cacheSize, Value: "128MiB", Usage: "`SIZE` of the in-memory chunk cache"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if c.NArg() > 0 {
				return usagef("dump takes no arguments (got %q): name tables with --table and the backup with --backup", c.Args().First())
			}
			o.tables = tables.Value()
			return runDump(c.Context, e, c.App.Writer, o)
		},
	}
}

func runDump(ctx context.Context, e *env, stdout io.Writer, o dumpOptions) error {
	format, err := pgdump.ParseFormat(o.format)
	if err != nil {
		return usageError{err}
	}
	var tables []pgdump.Table
	for _, s := range o.tables {
		t, err := pgdump.ParseTable(s)
		if err != nil {
			return usagef("--table: %v", err)
		}
		tables = append(tables, t)
	}
	switch {
	case o.globals && (len(tables) > 0 || o.db != ""):
		return usagef("--globals dumps roles and tablespaces: it takes no --table or --db (run pgvault dump twice)")
	case o.globals && (o.schemaOnly || o.dataOnly || format != pgdump.Plain):
		return usagef("--globals writes SQL only: --schema-only, --data-only and --format do not apply")
	case !o.globals && len(tables) == 0 && o.db == "":
		return usagef("say what to dump: --table SCHEMA.TABLE, --db DATABASE or --globals")
	case o.schemaOnly && o.dataOnly:
		return usagef("--schema-only and --data-only: give one")
	case format == pgdump.Directory && o.file == "":
		return usagef("--format directory writes a folder: give it with -f DIR")
	}
	if o.file == "" && format == pgdump.Custom {
		if f, ok := stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return usagef("--format custom is binary: write it with -f FILE or pipe it (| pg_restore -d DATABASE)")
		}
	}
	rc, err := recoveryFromFlags(o.target)
	if err != nil {
		return err
	}
	cacheSize, err := parseByteSize(o.cacheSize)
	if err != nil {
		return usagef("--cache-size: %v", err)
	}
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	// With the dump on standard output, the report goes to standard error.
	report := e.out
	if o.file == "" {
		report = &printer{json: e.out.json, ndjson: e.out.ndjson, w: e.stderr}
	}
	rep, err := site.Dump(ctx, service.DumpOptions{
		Ref: o.backup, Recovery: rc, Globals: o.globals, DB: o.db, Tables: tables,
		Format: format, SchemaOnly: o.schemaOnly, DataOnly: o.dataOnly, File: o.file, Out: stdout,
		PGBin: o.pgBin, PGDump: o.pgDump, Owner: o.owner, DBUser: o.dbUser, Timeout: o.timeout, CacheSize: cacheSize,
		Progress: func(p string) {
			e.log.Info("dump", "phase", p)
			report.event("phase", map[string]any{"task": "dump", "phase": p})
		},
	})
	if err != nil {
		return err
	}
	return report.emit(rep, func(w io.Writer) { printDump(w, rep) })
}

func printDump(w io.Writer, rep *service.DumpReport) {
	what := "the globals"
	switch rep.What {
	case "database":
		what = fmt.Sprintf("database %s", rep.Database)
	case "tables":
		names := make([]string, len(rep.Tables))
		for i, t := range rep.Tables {
			names[i] = t.Name
		}
		what = fmt.Sprintf("%s of database %s", strings.Join(names, ", "), rep.Database)
	}
	out := rep.Output
	if out == "-" {
		out = "standard output"
	}
	fmt.Fprintf(w, "dumped %s from backup %s at %s (recovery %s): %s, %s format, to %s\n",
		what, service.ShortID(rep.ID), rep.Target, rep.Reached, service.HumanBytes(rep.Bytes), rep.Format, out)
	for _, t := range rep.Tables {
		rows := "definition only"
		if t.Rows != nil {
			rows = fmt.Sprintf("%d rows", *t.Rows)
		}
		fmt.Fprintf(w, "  %s: %s (%s in the backup)\n", t.Name, rows, service.HumanBytes(t.Bytes))
	}
	fmt.Fprintf(w, "mount %.2fs, start %.2fs, recovery %.2fs, dump %.2fs, stop %.2fs; %.1fs in all\n",
		rep.Phases["mount"], rep.Phases["start"], rep.Phases["recovery"], rep.Phases["dump"], rep.Phases["stop"], rep.Seconds)
}

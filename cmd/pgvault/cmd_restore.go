package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/internal/service"
)

type restoreOptions struct {
	target        string
	tablespaceMap []string
	parallel      int

	// Point in time: at most one of these.
	toTime, toLSN, toXID, toName string
	toImmediate                  bool
	exclusive                    bool
	targetAction                 string
	timeline                     string

	standby         bool
	primaryConnInfo string
	delta           bool
	dbInclude       []string
	preview         bool
	noRecovery      bool
}

func restoreCommand() *cli.Command {
	var o restoreOptions
	var tsMap, dbInclude cli.StringSlice
	return &cli.Command{
		Name:  "restore",
		Usage: "restore a base backup into a data directory, configured to recover to a point in time, as a standby, or over an existing copy (--delta)",
		Description: "Without --to*, recovery replays every WAL file the repository holds (restore_command = pgvault wal fetch) and promotes.\n" +
			"The backup is chosen for the target when ID is omitted or \"latest\"; --preview shows the plan and writes nothing.",
		ArgsUsage: "[ID|latest]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "target", Destination: &o.target, Required: true, Usage: "data `DIR` to create (must be new or empty, unless --delta)"},
			&cli.StringSliceFlag{Name: "tablespace-map", Destination: &tsMap, Usage: "restore the tablespace at `OLD=NEW` elsewhere (repeatable)"},
			&cli.IntFlag{Name: "parallel", Destination: &o.parallel, Value: 8, Usage: "`N` files fetched at once"},
			&cli.StringFlag{Name: "to", Destination: &o.toTime, Usage: "recover to `TIME` (RFC 3339, \"2026-01-02 15:04:05.123456+00\" (without a zone: local time), \"5 minutes ago\", \"yesterday 14:00\")"},
			&cli.StringFlag{Name: "to-lsn", Destination: &o.toLSN, Usage: "recover to WAL location `LSN` (e.g. 0/3000060)"},
			&cli.StringFlag{Name: "to-xid", Destination: &o.toXID, Usage: "recover to the commit of transaction `XID` (txid_current())"},
			&cli.StringFlag{Name: "to-name", Destination: &o.toName, Usage: "recover to the restore point `NAME` (pg_create_restore_point)"},
			&cli.BoolFlag{Name: "to-immediate", Destination: &o.toImmediate, Usage: "recover only until the backup is consistent"},
			&cli.BoolFlag{Name: "target-exclusive", Destination: &o.exclusive, Usage: "stop just before the --to/--to-lsn/--to-xid target instead of just after it"},
			&cli.StringFlag{Name: "target-action", Destination: &o.targetAction,
				Usage: "`ACTION` at the target: pause (the default, as PostgreSQL's: read-only until pg_wal_replay_resume()), promote or shutdown"},
			&cli.StringFlag{Name: "timeline", Destination: &o.timeline, Value: "latest", Usage: "timeline to recover along: `latest`, current (the backup's) or an ID"},
			&cli.BoolFlag{Name: "standby", Destination: &o.standby, Usage: "configure a standby (standby.signal): replay the archive, then stream from --primary-conninfo"},
			&cli.StringFlag{Name: "primary-conninfo", Destination: &o.primaryConnInfo, Usage: "libpq `CONNINFO` of the primary a --standby streams from"},
			&cli.BoolFlag{Name: "delta", Destination: &o.delta, Usage: "restore over an existing data directory of this cluster (PostgreSQL stopped), rewriting only what differs"},
			&cli.StringSliceFlag{Name: "db-include", Destination: &dbInclude, Usage: "restore only database `DB` (repeatable; template0, template1 and postgres always): the others' files are left empty, to drop after recovery"},
			&cli.BoolFlag{Name: "preview", Destination: &o.preview, Usage: "show which backup and WAL the restore would use, and write nothing"},
			&cli.BoolFlag{Name: "no-recovery-config", Destination: &o.noRecovery, Usage: "write no restore_command, signal file or target: a copy of the files only"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if c.NArg() > 1 {
				return usagef("restore takes one backup ID (got %d arguments)", c.NArg())
			}
			o.tablespaceMap, o.dbInclude = tsMap.Value(), dbInclude.Value()
			return runRestore(c.Context, e, c.Args().First(), o)
		},
	}
}

// recoveryFromFlags turns the --to*, --target-*, --timeline and --standby
// flags into a recovery configuration (without its restore_command).
func recoveryFromFlags(o restoreOptions) (wal.RecoveryConfig, error) {
	var rc wal.RecoveryConfig
	var given []string
	if o.toTime != "" {
		given = append(given, "--to")
		t, err := wal.ParseTargetTimeAt(o.toTime, time.Local, time.Now())
		if err != nil {
			return rc, usageError{fmt.Errorf("--to: %w", err)}
		}
		rc.Target = wal.TimeTarget(t)
	}
	if o.toLSN != "" {
		given = append(given, "--to-lsn")
		lsn, err := wal.ParseTargetLSN(o.toLSN)
		if err != nil {
			return rc, usageError{fmt.Errorf("--to-lsn: %w", err)}
		}
		rc.Target = wal.LSNTarget(lsn)
	}
	if o.toXID != "" {
		given = append(given, "--to-xid")
		x, err := wal.ParseTargetXID(o.toXID)
		if err != nil {
			return rc, usageError{fmt.Errorf("--to-xid: %w", err)}
		}
		rc.Target = wal.XIDTarget(x)
	}
	if o.toName != "" {
		given = append(given, "--to-name")
		rc.Target = wal.NameTarget(o.toName)
	}
	if o.toImmediate {
		given = append(given, "--to-immediate")
		rc.Target = wal.ImmediateTarget()
	}
	if len(given) > 1 {
		return rc, usagef("%s: give one recovery target", strings.Join(given, " and "))
	}
	if o.exclusive {
		if !rc.Target.HasInclusive() {
			return rc, usagef("--target-exclusive applies to --to, --to-lsn and --to-xid")
		}
		rc.Target.Exclusive = true
	}
	if err := rc.Target.Validate(); err != nil {
		return rc, usageError{err}
	}
	if o.targetAction != "" {
		if rc.Target.IsEnd() {
			return rc, usagef("--target-action needs a recovery target (--to, --to-lsn, --to-xid, --to-name or --to-immediate)")
		}
		a, err := wal.ParseTargetAction(o.targetAction)
		if err != nil {
			return rc, usageError{fmt.Errorf("--target-action: %w", err)}
		}
		rc.Action = a
	}
	g, err := wal.ParseTimelineGoal(o.timeline)
	if err != nil {
		return rc, usageError{fmt.Errorf("--timeline: %w", err)}
	}
	rc.Timeline = g
	switch {
	case o.standby && len(given) > 0:
		return rc, usagef("--standby and %s: a standby follows its primary and has no recovery target", given[0])
	case o.primaryConnInfo != "" && !o.standby:
		return rc, usagef("--primary-conninfo is for --standby")
	case o.standby && o.primaryConnInfo == "":
		return rc, usagef("--standby needs --primary-conninfo CONNINFO (the primary to stream from)")
	case o.noRecovery && (len(given) > 0 || o.standby):
		what := "--standby"
		if len(given) > 0 {
			what = given[0]
		}
		return rc, usagef("--no-recovery-config and %s: a recovery target or a standby needs the recovery configuration", what)
	}
	rc.Standby, rc.PrimaryConnInfo = o.standby, o.primaryConnInfo
	return rc, nil
}

func runRestore(ctx context.Context, e *env, ref string, o restoreOptions) error {
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	return restoreFrom(ctx, e, site, ref, o)
}

// restoreFrom restores backup ref of site as o says.
func restoreFrom(ctx context.Context, e *env, site *service.Site, ref string, o restoreOptions) error {
	if o.delta && len(o.dbInclude) > 0 {
		return usagef("--db-include and --delta: a delta restore brings the whole cluster back; restore one database into a new directory")
	}
	rc, err := recoveryFromFlags(o)
	if err != nil {
		return err
	}
	mapping := map[string]string{}
	for _, m := range o.tablespaceMap {
		old, new, ok := strings.Cut(m, "=")
		if !ok || !filepath.IsAbs(old) || !filepath.IsAbs(new) {
			return usagef("--tablespace-map %q: use OLD=NEW with absolute paths", m)
		}
		mapping[filepath.Clean(old)] = filepath.Clean(new)
	}
	bar := newProgress(e.out, e.stderr, "restore")
	rep, err := site.Restore(ctx, service.RestoreOptions{
		Ref: ref, Target: o.target, TablespaceMap: mapping, Parallel: o.parallel, Delta: o.delta, IncludeDatabases: o.dbInclude,
		Preview: o.preview, NoRecovery: o.noRecovery, Recovery: rc,
		Progress: func(done, total int64) { bar.update(done, total, "bytes") },
	})
	bar.done()
	if err != nil {
		return err
	}
	plan := rep.Plan
	if rep.Preview {
		return e.out.emit(rep, func(w io.Writer) {
			printPlan(w, plan)
			if rep.Recovery != nil {
				fmt.Fprintf(w, "would write %s and append to %s:\n", filepath.Base(rep.Recovery.SignalFile), rep.Recovery.AutoConf)
				for _, s := range rep.Recovery.Settings {
					fmt.Fprintf(w, "  %s\n", s)
				}
				fmt.Fprintln(w, rep.Recovery.Behaviour)
			}
			fmt.Fprintf(w, "preview: nothing was written to %s\n", o.target)
		})
	}
	for _, w := range rep.Warnings {
		fmt.Fprintln(e.stderr, "pgvault: warning: "+oneLine(w))
	}
	id := service.ShortID(rep.ID)
	return e.out.emit(rep, func(w io.Writer) {
		printPlan(w, plan)
		if d := rep.Delta; d != nil {
			fmt.Fprintf(w, "delta restore of backup %s into %s: checked %d files (%d unchanged, %d rewritten, %d created), removed %d paths; wrote %s in %d chunks, read %s to compare, in %.1fs\n",
				id, o.target, d.Checked, d.Unchanged, d.Rewritten, d.Created, d.Removed, service.HumanBytes(d.BytesWritten), d.ChunksWritten,
				service.HumanBytes(d.BytesRead), rep.Seconds)
		} else {
			fmt.Fprintf(w, "restored backup %s into %s: %d files, %s in %.1fs (%.0f MB/s)\n",
				id, o.target, rep.Files, service.HumanBytes(rep.Bytes), rep.Seconds, rep.MBPerSecond)
		}
		for oid, loc := range rep.Tablespaces {
			fmt.Fprintf(w, "tablespace %s restored at %s\n", oid, loc)
		}
		if len(rep.ExcludedDatabases) > 0 {
			fmt.Fprintf(w, "databases %s were left out (empty files): once recovery has ended, drop them (DROP DATABASE); until then connecting to them fails\n",
				strings.Join(rep.ExcludedDatabases, ", "))
		}
		if rep.Recovery == nil {
			fmt.Fprintln(w, "no recovery configuration written (--no-recovery-config)")
			return
		}
		fmt.Fprintf(w, "wrote %s and appended to %s:\n", filepath.Base(rep.Recovery.SignalFile), rep.Recovery.AutoConf)
		for _, s := range rep.Recovery.Settings {
			fmt.Fprintf(w, "  %s\n", s)
		}
		fmt.Fprintln(w, rep.Recovery.Behaviour)
		fmt.Fprintf(w, "start it: pg_ctl -D %s start\n", o.target)
	})
}

// printPlan writes the plan for people.
func printPlan(w io.Writer, p *backup.RestorePlan) {
	info := p.Backup.Info
	label := ""
	if p.Backup.Label != "" {
		label = fmt.Sprintf(" %q", p.Backup.Label)
	}
	fmt.Fprintf(w, "backup %s%s: timeline %d, %s..%s, ended %s (%s)\n", service.ShortID(p.Backup.ID), label, info.Timeline,
		info.StartLSN, info.StopLSN, info.StopTime.UTC().Format("2006-01-02 15:04:05Z"), p.Chosen)
	fmt.Fprintf(w, "target: %s; timeline %s (%d)\n", p.Target, p.TimelineGoal, p.Timeline)
	if len(p.WAL) > 0 {
		fmt.Fprintf(w, "WAL: %d segments (%s) from the repository, %s .. %s", p.Segments, service.HumanBytes(p.Bytes), p.FirstSegment(), p.LastSegment())
		if len(p.Partial) > 0 {
			fmt.Fprintf(w, ", %d only as .partial", len(p.Partial))
		}
		fmt.Fprintln(w)
	} else if p.ArchiveEnd != 0 || !info.Standalone {
		fmt.Fprintln(w, "WAL: none from the repository")
	}
	if p.ArchiveEnd != 0 {
		fmt.Fprintf(w, "newest restorable point on timeline %d: LSN %s", p.Timeline, p.ArchiveEnd)
		if !p.ArchiveEndStored.IsZero() {
			fmt.Fprintf(w, " (WAL stored %s)", p.ArchiveEndStored.UTC().Format("2006-01-02 15:04:05Z"))
		}
		fmt.Fprintln(w)
	}
	for _, n := range p.Notes {
		fmt.Fprintln(w, "note: "+n)
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/stream/wal"
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
	preview         bool
	noRecovery      bool
}

func restoreCommand() *cli.Command {
	var o restoreOptions
	var tsMap cli.StringSlice
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
			&cli.StringFlag{Name: "to", Destination: &o.toTime, Usage: "recover to `TIME` (RFC 3339 or \"2026-01-02 15:04:05.123456+00\"; without a zone: local time)"},
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
			o.tablespaceMap = tsMap.Value()
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
		t, err := wal.ParseTargetTime(o.toTime, time.Local)
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

type restoreReport struct {
	ID          string              `json:"id"`
	Target      string              `json:"target"`
	Preview     bool                `json:"preview"`
	Plan        *backup.RestorePlan `json:"plan"`
	Tablespaces map[string]string   `json:"tablespaces"`
	Files       int64               `json:"files"`
	Bytes       int64               `json:"bytes"`
	Seconds     float64             `json:"seconds"`
	MBPerSecond float64             `json:"mb_per_second"`
	Delta       *deltaReport        `json:"delta"`
	Recovery    *recoveryReport     `json:"recovery"`
	Warnings    []string            `json:"warnings"`
}

type deltaReport struct {
	Checked        int64    `json:"checked"`
	Unchanged      int64    `json:"unchanged"`
	Rewritten      int64    `json:"rewritten"`
	Created        int64    `json:"created"`
	Removed        int64    `json:"removed"`
	ChunksWritten  int64    `json:"chunks_written"`
	BytesWritten   int64    `json:"bytes_written"`
	BytesRead      int64    `json:"bytes_read"`
	RewrittenFiles []string `json:"rewritten_files"`
	CreatedFiles   []string `json:"created_files"`
	RemovedPaths   []string `json:"removed_paths"`
}

type recoveryReport struct {
	SignalFile string        `json:"signal_file"`
	AutoConf   string        `json:"auto_conf"`
	Settings   []wal.Setting `json:"settings"`
	// Disabled counts earlier recovery settings commented out in
	// postgresql.auto.conf.
	Disabled int `json:"disabled"`
	// Behaviour says what PostgreSQL will do, in PostgreSQL's terms.
	Behaviour string `json:"behaviour"`
}

func runRestore(ctx context.Context, e *env, ref string, o restoreOptions) error {
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
	ropts := backup.RestoreOptions{Target: o.target, TablespaceMap: mapping, Parallel: o.parallel, Delta: o.delta}
	// Cheap refusals first: nothing is planned for a target we cannot use.
	if err := backup.CheckTarget(ropts, nil); err != nil {
		return err
	}
	r, err := e.openRepo(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	if !o.noRecovery {
		if rc.RestoreCommand, err = e.restoreCommand(r); err != nil {
			return err
		}
	}

	in, snaps, err := planInput(ctx, r)
	if err != nil {
		return err
	}
	in.Ref, in.Target, in.Timeline, in.Standby, in.FilesOnly = ref, rc.Target, rc.Timeline, rc.Standby, o.noRecovery
	plan, err := backup.PlanRestore(in)
	if err != nil {
		return err
	}
	if err := backup.CheckTarget(ropts, plan.Backup.Info); err != nil {
		return err
	}
	rep := restoreReport{ID: plan.Backup.ID, Target: o.target, Plan: plan, Tablespaces: map[string]string{}, Warnings: []string{}}
	if !o.noRecovery {
		rep.Recovery = &recoveryReport{SignalFile: filepath.Join(o.target, rc.SignalFile()), AutoConf: filepath.Join(o.target, "postgresql.auto.conf"),
			Settings: rc.Settings(), Behaviour: behaviour(rc, plan)}
	}
	if o.preview {
		rep.Preview = true
		return e.out.emit(rep, func(w io.Writer) {
			printPlan(w, plan)
			if rep.Recovery != nil {
				fmt.Fprintf(w, "would write %s and append to %s:\n", rc.SignalFile(), rep.Recovery.AutoConf)
				for _, s := range rep.Recovery.Settings {
					fmt.Fprintf(w, "  %s\n", s)
				}
				fmt.Fprintln(w, rep.Recovery.Behaviour)
			}
			fmt.Fprintf(w, "preview: nothing was written to %s\n", o.target)
		})
	}

	s := snaps[plan.Backup.ID]
	bar := newProgress(e.out, e.stderr, "restore")
	ropts.Progress = func(done, total int64) { bar.update(done, total, "bytes") }
	fresh := restoreDirs(o.target, plan.Backup.Info, mapping)
	res, err := backup.Restore(ctx, r, s, ropts)
	bar.done()
	if err != nil {
		if !o.delta {
			// Like pg_basebackup: a failed restore leaves no half-written
			// data directory that someone could start by mistake.
			removePartialRestore(fresh)
			err = fmt.Errorf("%w (the partial restore was removed from %s)", err, o.target)
		}
		return err
	}
	rep.Files, rep.Bytes, rep.Seconds, rep.MBPerSecond = res.Files, res.Bytes, res.Duration.Seconds(), mbPerSec(res.Bytes, res.Duration)
	for oid, loc := range res.Tablespaces {
		rep.Tablespaces[fmt.Sprint(oid)] = loc
	}
	if d := res.Delta; d != nil {
		rep.Delta = &deltaReport{Checked: d.Checked, Unchanged: d.Unchanged, Rewritten: d.Rewritten, Created: d.Created, Removed: d.Removed,
			ChunksWritten: d.ChunksWritten, BytesWritten: d.BytesWritten, BytesRead: d.BytesRead,
			RewrittenFiles: nonNilStrings(d.RewrittenFiles), CreatedFiles: nonNilStrings(d.CreatedFiles), RemovedPaths: nonNilStrings(d.RemovedPaths)}
	}
	if !o.noRecovery {
		note := fmt.Sprintf("pgvault restore of backup %s (%s) at %s", s.ShortID(), plan.Target, time.Now().UTC().Format(time.RFC3339))
		wr, err := backup.WriteRecoveryConfig(o.target, rc, note)
		if err != nil {
			return err
		}
		rep.Recovery.Disabled = wr.Disabled
		rep.Warnings = append(rep.Warnings, wr.Warnings...)
		if w := e.passwordFileWarning(o.target); w != "" {
			rep.Warnings = append(rep.Warnings, w)
		}
	}
	for _, w := range rep.Warnings {
		fmt.Fprintln(e.stderr, "pgvault: warning: "+oneLine(w))
	}
	return e.out.emit(rep, func(w io.Writer) {
		printPlan(w, plan)
		if d := res.Delta; d != nil {
			fmt.Fprintf(w, "delta restore of backup %s into %s: checked %d files (%d unchanged, %d rewritten, %d created), removed %d paths; wrote %s in %d chunks, read %s to compare, in %.1fs\n",
				s.ShortID(), o.target, d.Checked, d.Unchanged, d.Rewritten, d.Created, d.Removed, humanBytes(d.BytesWritten), d.ChunksWritten,
				humanBytes(d.BytesRead), res.Duration.Seconds())
		} else {
			fmt.Fprintf(w, "restored backup %s into %s: %d files, %s in %.1fs (%.0f MB/s)\n",
				s.ShortID(), o.target, res.Files, humanBytes(res.Bytes), res.Duration.Seconds(), rep.MBPerSecond)
		}
		for oid, loc := range res.Tablespaces {
			fmt.Fprintf(w, "tablespace %d restored at %s\n", oid, loc)
		}
		if rep.Recovery == nil {
			fmt.Fprintln(w, "no recovery configuration written (--no-recovery-config)")
			return
		}
		fmt.Fprintf(w, "wrote %s and appended to %s:\n", rc.SignalFile(), rep.Recovery.AutoConf)
		for _, s := range rep.Recovery.Settings {
			fmt.Fprintf(w, "  %s\n", s)
		}
		fmt.Fprintln(w, rep.Recovery.Behaviour)
		fmt.Fprintf(w, "start it: pg_ctl -D %s start\n", o.target)
	})
}

// planInput reads what the planner decides from: every base backup, the
// WAL catalogue and the timeline history files. It also returns the
// backups' snapshots by ID, so that the caller need not load the chosen
// one again. The snapshots and the WAL catalogue are listed at the same
// time, and the history files loaded in parallel: on an object store each
// is a round trip.
func planInput(ctx context.Context, r *repo.Repository) (backup.PlanInput, map[string]*repo.Snapshot, error) {
	var in backup.PlanInput
	var snaps []*repo.Snapshot
	var snapErr error
	listed := make(chan struct{})
	go func() {
		defer close(listed)
		snaps, snapErr = r.Snapshots(ctx)
	}()
	var walErr error
	in.WAL, walErr = r.ListWAL(ctx)
	<-listed
	if snapErr != nil {
		return in, nil, snapErr
	}
	if walErr != nil {
		return in, nil, walErr
	}
	byID := map[string]*repo.Snapshot{}
	for _, s := range snaps {
		if s.Kind != backup.SnapshotKind {
			continue
		}
		info, err := backup.InfoOf(s)
		if err != nil {
			return in, nil, err
		}
		in.Backups = append(in.Backups, backup.PlanBackup{ID: s.ID, Label: s.Label, Info: info})
		byID[s.ID] = s
	}
	type history struct {
		tli  uint32
		data []byte
		err  error
	}
	var loads []chan history
	for _, e := range in.WAL {
		f, err := wal.ParseFileName(e.Name, wal.DefaultSegmentSize)
		if err != nil || f.Kind != wal.KindHistory {
			continue
		}
		ch := make(chan history, 1)
		loads = append(loads, ch)
		go func() {
			data, _, err := r.LoadWAL(ctx, e.Timeline, e.Name)
			if err != nil {
				err = fmt.Errorf("timeline history %s: %w", e.Name, err)
			}
			ch <- history{f.Timeline, data, err}
		}()
	}
	in.Histories = map[uint32][]byte{}
	var firstErr error
	for _, ch := range loads {
		h := <-ch
		if h.err != nil && firstErr == nil {
			firstErr = h.err
		}
		in.Histories[h.tli] = h.data
	}
	return in, byID, firstErr
}

// restoreCommand builds the restore_command for the restored server. It
// runs as the data directory's owner, not as this user and without this
// environment: it names the pgvault binary, the repository and the cache
// folder by absolute path, and the password by its file (never the
// password itself, which would land in postgresql.auto.conf).
func (e *env) restoreCommand(r *repo.Repository) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("restore_command: cannot find the pgvault binary: %w", err)
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	u, err := e.repoURL()
	if err != nil {
		return "", err
	}
	if err := urlWithoutSecret(u); err != nil {
		return "", err
	}
	argv := []string{exe, "--repo", absRepoURL(u)}
	if r.Config().Encrypted() {
		pf := e.c.String("password-file")
		if pf == "" {
			return "", errors.New("the repository password only came from PGVAULT_PASSWORD, and restore_command cannot use it (it would have to be written into postgresql.auto.conf): give --password-file FILE (readable by the data directory's owner), or use --no-recovery-config")
		}
		abs, err := filepath.Abs(pf)
		if err != nil {
			return "", err
		}
		if envPW, ok := os.LookupEnv("PGVAULT_PASSWORD"); ok && envPW != "" {
			data, err := os.ReadFile(abs)
			if err != nil {
				return "", fmt.Errorf("read password file: %w", err)
			}
			line, _, _ := strings.Cut(string(data), "\n")
			if strings.TrimRight(line, "\r") != envPW {
				return "", fmt.Errorf("the password file %s does not hold the password in PGVAULT_PASSWORD, and restore_command would use the file", abs)
			}
		}
		argv = append(argv, "--password-file", abs)
	}
	if e.c.IsSet("cache-dir") && e.c.String("cache-dir") != "" {
		abs, err := filepath.Abs(e.c.String("cache-dir"))
		if err != nil {
			return "", err
		}
		argv = append(argv, "--cache-dir", abs)
	}
	argv = append(argv, "wal", "fetch")
	return wal.RestoreCommand(argv...), nil
}

// urlWithoutSecret refuses a repository URL that holds a password: it
// would be written into postgresql.auto.conf.
func urlWithoutSecret(u string) error {
	p, err := url.Parse(u)
	if err != nil || p.User == nil {
		return nil
	}
	if _, ok := p.User.Password(); ok {
		return usagef("the repository URL holds a password, which restore_command would write into postgresql.auto.conf: use a key file (sftp ?identity=) or the backend's credential files instead")
	}
	return nil
}

// absRepoURL makes a repository given as a relative path absolute
// (restore_command runs in the data directory).
func absRepoURL(u string) string {
	if strings.Contains(u, "://") || filepath.IsAbs(u) {
		return u
	}
	if a, err := filepath.Abs(u); err == nil {
		return a
	}
	return u
}

// passwordFileWarning says, in one line, when the data directory's owner
// (who runs restore_command) cannot read the password file.
func (e *env) passwordFileWarning(dataDir string) string {
	pf := e.c.String("password-file")
	if pf == "" {
		return ""
	}
	uid, gid, err := backup.DataDirOwner(dataDir)
	if err != nil {
		return ""
	}
	if err := backup.CheckReadableBy(pf, uid, gid); err != nil {
		return fmt.Sprintf("the password file is not usable by uid %d, the data directory's owner, so restore_command will fail: %v (chown or chmod it, or copy it somewhere that user can read and restore with --password-file pointing there)", uid, err)
	}
	return ""
}

// behaviour says what PostgreSQL will do with the configuration.
func behaviour(rc wal.RecoveryConfig, plan *backup.RestorePlan) string {
	tl := fmt.Sprintf("timeline %s", rc.Timeline)
	if rc.Timeline.Kind == wal.TimelineLatest {
		tl = fmt.Sprintf("the latest timeline (%d with the WAL stored now)", plan.Timeline)
	}
	switch {
	case rc.Standby:
		return fmt.Sprintf("PostgreSQL starts as a standby (standby.signal): it replays the WAL in the repository along %s, then streams from primary_conninfo, and stays in recovery until promoted", tl)
	case rc.Target.IsEnd():
		return fmt.Sprintf("PostgreSQL replays every WAL file the repository holds along %s (no recovery target), then promotes and accepts writes", tl)
	}
	incl := ""
	if rc.Target.HasInclusive() {
		incl = " (recovery_target_inclusive = " + fmt.Sprint(!rc.Target.Exclusive) + ")"
	}
	s := fmt.Sprintf("PostgreSQL replays WAL along %s up to %s%s, then will %s (recovery_target_action = '%s')",
		tl, rc.Target, incl, rc.EffectiveAction().Describe(), rc.EffectiveAction())
	if rc.EffectiveAction() == wal.ActionPause {
		s += "; --target-action promote opens it for writes at once"
	}
	return s
}

// printPlan writes the plan for people.
func printPlan(w io.Writer, p *backup.RestorePlan) {
	info := p.Backup.Info
	label := ""
	if p.Backup.Label != "" {
		label = fmt.Sprintf(" %q", p.Backup.Label)
	}
	fmt.Fprintf(w, "backup %s%s: timeline %d, %s..%s, ended %s (%s)\n", shortSnap(p.Backup.ID), label, info.Timeline,
		info.StartLSN, info.StopLSN, info.StopTime.UTC().Format("2006-01-02 15:04:05Z"), p.Chosen)
	fmt.Fprintf(w, "target: %s; timeline %s (%d)\n", p.Target, p.TimelineGoal, p.Timeline)
	if len(p.WAL) > 0 {
		fmt.Fprintf(w, "WAL: %d segments (%s) from the repository, %s .. %s", p.Segments, humanBytes(p.Bytes), p.FirstSegment(), p.LastSegment())
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

func shortSnap(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// restoreDirs lists the folders a restore into empty folders writes (the
// target and every tablespace location), each with whether it existed
// before (empty, as CheckTarget made sure).
func restoreDirs(target string, info *backup.Info, mapping map[string]string) map[string]bool {
	dirs := map[string]bool{}
	add := func(dir string) {
		if abs, err := filepath.Abs(dir); err == nil {
			_, err := os.Stat(abs)
			dirs[abs] = err == nil
		}
	}
	add(target)
	if info != nil {
		for _, ts := range info.Tablespaces {
			loc := filepath.Clean(ts.Location)
			if m, ok := mapping[loc]; ok {
				loc = m
			}
			add(loc)
		}
	}
	return dirs
}

// removePartialRestore removes what a failed restore wrote: the folders it
// created, and the contents of the empty folders it was given.
func removePartialRestore(dirs map[string]bool) {
	for dir, existed := range dirs {
		if !existed {
			os.RemoveAll(dir)
			continue
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

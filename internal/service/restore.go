package service

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend/all"
)

// RestoreOptions configure Restore.
type RestoreOptions struct {
	// Ref names the backup: an ID, a unique prefix, "" or "latest" (the
	// planner picks the newest backup that reaches the target).
	Ref string
	// Target is the data directory to write.
	Target string
	// TablespaceMap moves tablespaces: old location -> new, both absolute.
	TablespaceMap map[string]string
	// Parallel is how many files are fetched at once (0: 8).
	Parallel int
	// Delta restores over an existing copy of this cluster, rewriting only
	// what differs.
	Delta bool
	// IncludeDatabases restores only these databases (and the system
	// ones); the others' relation files become empty sparse files, to be
	// dropped after recovery.
	IncludeDatabases []string
	// Preview plans and writes nothing.
	Preview bool
	// NoRecovery writes no recovery configuration: a copy of the files.
	NoRecovery bool
	// Recovery is the recovery target, timeline and standby settings; its
	// RestoreCommand is filled in here.
	Recovery wal.RecoveryConfig
	// Executable is the pgvault binary restore_command runs ("": this
	// process's own).
	Executable string
	// Progress, if set, is called with bytes written and the total.
	Progress func(done, total int64)
}

// RestoreReport is what Restore did (or, with Preview, would do).
type RestoreReport struct {
	ID          string              `json:"id"`
	Target      string              `json:"target"`
	Preview     bool                `json:"preview"`
	Plan        *backup.RestorePlan `json:"plan"`
	Tablespaces map[string]string   `json:"tablespaces"`
	Files       int64               `json:"files"`
	Bytes       int64               `json:"bytes"`
	Seconds     float64             `json:"seconds"`
	MBPerSecond float64             `json:"mb_per_second"`
	Delta       *DeltaReport        `json:"delta"`
	// ExcludedDatabases are the databases restored as empty files
	// (IncludeDatabases): drop them after recovery.
	ExcludedDatabases []string        `json:"excluded_databases,omitempty"`
	Recovery          *RecoveryReport `json:"recovery"`
	Warnings          []string        `json:"warnings"`
}

// DeltaReport is what a delta restore compared and rewrote.
type DeltaReport struct {
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

// RecoveryReport is the recovery configuration a restore writes.
type RecoveryReport struct {
	SignalFile string        `json:"signal_file"`
	AutoConf   string        `json:"auto_conf"`
	Settings   []wal.Setting `json:"settings"`
	// Disabled counts earlier recovery settings commented out in
	// postgresql.auto.conf.
	Disabled int `json:"disabled"`
	// Behaviour says what PostgreSQL will do, in PostgreSQL's terms.
	Behaviour string `json:"behaviour"`
}

// Restore restores a backup into a data directory and writes its
// recovery configuration. A restore into empty folders that fails removes
// what it wrote, like pg_basebackup: no half-written data directory is
// left for someone to start by mistake.
func (s *Site) Restore(ctx context.Context, o RestoreOptions) (*RestoreReport, error) {
	ropts := backup.RestoreOptions{Target: o.Target, TablespaceMap: o.TablespaceMap, Parallel: o.Parallel, Delta: o.Delta, IncludeDatabases: o.IncludeDatabases}
	// Cheap refusals first: nothing is planned for a target we cannot use.
	if err := backup.CheckTarget(ropts, nil); err != nil {
		return nil, err
	}
	r, err := s.Open(ctx, Access{Reads: "restore"})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	rc := o.Recovery
	if !o.NoRecovery {
		if rc.RestoreCommand, err = s.RestoreCommand(r, o.Executable); err != nil {
			return nil, err
		}
	}
	cat, err := LoadCatalog(ctx, r)
	if err != nil {
		return nil, err
	}
	plan, snap, err := cat.PlanRestore(backup.PlanInput{Ref: o.Ref, Target: rc.Target, Timeline: rc.Timeline, Standby: rc.Standby, FilesOnly: o.NoRecovery})
	if err != nil {
		return nil, err
	}
	if err := backup.CheckTarget(ropts, plan.Backup.Info); err != nil {
		return nil, err
	}
	if _, err := backup.ExcludedDatabases(plan.Backup.Info, o.IncludeDatabases); err != nil {
		return nil, fmt.Errorf("backup %s: %w", ShortID(plan.Backup.ID), err)
	}
	var accessWarning string
	if !o.NoRecovery {
		if err := s.checkRestoreAccess(snap.RootNode.UID, snap.RootNode.GID); err != nil {
			// A standalone backup reaches consistency from its own pg_wal:
			// only WAL after it (a later target) needs restore_command.
			if !plan.Backup.Info.Standalone {
				return nil, fmt.Errorf("%w; nothing was written", err)
			}
			accessWarning = err.Error() + " (the backup is standalone: it starts without the repository's WAL, but cannot recover past its end)"
		}
	}
	rep := &RestoreReport{ID: plan.Backup.ID, Target: o.Target, Plan: plan, Tablespaces: map[string]string{}, Warnings: []string{}}
	if accessWarning != "" {
		rep.Warnings = append(rep.Warnings, accessWarning)
	}
	if !o.NoRecovery {
		rep.Recovery = &RecoveryReport{SignalFile: filepath.Join(o.Target, rc.SignalFile()), AutoConf: filepath.Join(o.Target, "postgresql.auto.conf"),
			Settings: rc.Settings(), Behaviour: Behaviour(rc, plan)}
	}
	if o.Preview {
		rep.Preview = true
		return rep, nil
	}

	ropts.Progress = o.Progress
	fresh := restoreDirs(o.Target, plan.Backup.Info, o.TablespaceMap)
	res, err := backup.Restore(ctx, r, snap, ropts)
	if err != nil {
		if !o.Delta {
			removePartialRestore(fresh)
			err = fmt.Errorf("%w (the partial restore was removed from %s)", err, o.Target)
		}
		return nil, err
	}
	rep.Files, rep.Bytes, rep.Seconds, rep.MBPerSecond = res.Files, res.Bytes, res.Duration.Seconds(), MBPerSecond(res.Bytes, res.Duration)
	for _, d := range res.Excluded {
		rep.ExcludedDatabases = append(rep.ExcludedDatabases, d.Name)
	}
	for oid, loc := range res.Tablespaces {
		rep.Tablespaces[fmt.Sprint(oid)] = loc
	}
	if d := res.Delta; d != nil {
		rep.Delta = &DeltaReport{Checked: d.Checked, Unchanged: d.Unchanged, Rewritten: d.Rewritten, Created: d.Created, Removed: d.Removed,
			ChunksWritten: d.ChunksWritten, BytesWritten: d.BytesWritten, BytesRead: d.BytesRead,
			RewrittenFiles: sortedNonNil(d.RewrittenFiles), CreatedFiles: sortedNonNil(d.CreatedFiles), RemovedPaths: sortedNonNil(d.RemovedPaths)}
	}
	if !o.NoRecovery {
		note := fmt.Sprintf("pgvault restore of backup %s (%s) at %s", snap.ShortID(), plan.Target, s.now().UTC().Format(time.RFC3339))
		wr, err := backup.WriteRecoveryConfig(o.Target, rc, note)
		if err != nil {
			return nil, err
		}
		rep.Recovery.Disabled = wr.Disabled
		rep.Warnings = append(rep.Warnings, wr.Warnings...)
	}
	return rep, nil
}

// RestoreCommand builds the restore_command of a server restored from
// this site. It runs as the data directory's owner, not as this user and
// without this environment: it names the pgvault binary, the repository
// and the cache folder by absolute path, and the password by its file
// (never the password itself, which would land in postgresql.auto.conf).
func (s *Site) RestoreCommand(r *repo.Repository, exe string) (string, error) {
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return "", fmt.Errorf("restore_command: cannot find the pgvault binary: %w", err)
		}
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	if p, err := url.Parse(s.Repo); err == nil && p.User != nil {
		if _, ok := p.User.Password(); ok {
			return "", fmt.Errorf("%w: the repository URL holds a password, which restore_command would write into postgresql.auto.conf: use a key file (sftp ?identity=) or the backend's credential files instead", ErrBadRepoURL)
		}
	}
	argv := []string{exe, "--repo", AbsIfPath(s.Repo)}
	if r.Config().Encrypted() {
		pw := s.Password
		if pw.File == "" {
			return "", errors.New("the repository password only came from PGVAULT_PASSWORD, and restore_command cannot use it (it would have to be written into postgresql.auto.conf): give --password-file FILE (readable by the data directory's owner), or use --no-recovery-config")
		}
		if pw.From != pw.File {
			line, err := ReadSecretFile(pw.File)
			if err != nil {
				return "", err
			}
			if line != string(pw.Secret) {
				return "", fmt.Errorf("the password file %s does not hold the password in PGVAULT_PASSWORD, and restore_command would use the file", pw.File)
			}
		}
		argv = append(argv, "--password-file", pw.File)
	}
	if s.CacheDir != "" {
		argv = append(argv, "--cache-dir", AbsIfPath(s.CacheDir))
	}
	argv = append(argv, "wal", "fetch")
	return wal.RestoreCommand(argv...), nil
}

// AbsIfPath makes a relative file path absolute (restore_command and the
// WAL prefetcher run in other folders); URLs and absolute paths are
// returned as they are.
func AbsIfPath(s string) string {
	if s == "" || filepath.IsAbs(s) || hasScheme(s) {
		return s
	}
	if a, err := filepath.Abs(s); err == nil {
		return a
	}
	return s
}

func hasScheme(s string) bool {
	i := strings.Index(s, "://")
	if i <= 0 {
		return false
	}
	for _, c := range s[:i] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// ErrRestoreAccess is matched when the restored server's restore_command
// would run as a user that cannot use the repository.
var ErrRestoreAccess = errors.New("the restored server could not fetch WAL")

// checkRestoreAccess refuses a restore, before anything is written, whose
// restore_command (run by PostgreSQL as the data directory's owner, uid:gid)
// could not read the repository or the password file, or write the cache
// folder: recovery would then stop at its first WAL file with "permission
// denied". Only a root restore gives the data directory another owner.
func (s *Site) checkRestoreAccess(uid, gid uint32) error {
	if os.Geteuid() != 0 || uid == 0 {
		return nil
	}
	var problems []string
	if loc, err := all.ParseURL(s.Repo); err == nil && loc.Scheme == "file" {
		if err := backup.CheckReadableBy(filepath.Join(loc.Path, "config"), uid, gid); err != nil {
			problems = append(problems, "the repository: "+err.Error())
		}
	}
	if pf := s.Password.File; pf != "" {
		if err := backup.CheckReadableBy(pf, uid, gid); err != nil {
			problems = append(problems, "the password file: "+err.Error())
		}
	}
	if s.CacheDir != "" {
		if err := backup.CheckWritableBy(s.CacheDir, uid, gid); err != nil {
			problems = append(problems, "the cache folder (--cache-dir): "+err.Error())
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: restore_command runs as uid %d, the owner of the restored data directory, and %s: make them usable by that user (chown/chmod, or copies it owns: --password-file, --cache-dir), or restore with --no-recovery-config",
		ErrRestoreAccess, uid, strings.Join(problems, "; "))
}

// Behaviour says what PostgreSQL will do with a recovery configuration.
func Behaviour(rc wal.RecoveryConfig, plan *backup.RestorePlan) string {
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
	out := fmt.Sprintf("PostgreSQL replays WAL along %s up to %s%s, then will %s (recovery_target_action = '%s')",
		tl, rc.Target, incl, rc.EffectiveAction().Describe(), rc.EffectiveAction())
	if rc.EffectiveAction() == wal.ActionPause {
		out += "; --target-action promote opens it for writes at once"
	}
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

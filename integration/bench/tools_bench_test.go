//go:build bench

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pgvault/pgvault/integration/pgtest"
)

const cmdTimeout = 60 * time.Minute

func oneLine(err error) string {
	s := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", " / ")), " ")
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}

// fail records a failed run and logs it.
func (b *bench) fail(step, tool string, err error) {
	b.logf("FAILED %s / %s: %v", tool, step, err)
	b.res.Fail(step, tool, oneLine(err))
}

// rootDir makes a new root-only folder, removed at the end (or by the
// next run's reapLedgers if this one is killed).
func (b *bench) rootDir(name string) string {
	parent := b.t.TempDir()
	b.led.add("dir", filepath.Dir(parent)) // the test's whole TempDir root
	dir, err := os.MkdirTemp(parent, name+"-")
	if err != nil {
		b.t.Fatal(err)
	}
	return dir
}

// pgDir makes a new empty folder owned by postgres (mode 0700) whose
// parents postgres can enter.
func (b *bench) pgDir() string { return pgtest.TempDir(b.t) }

// ================= pgvault =================

type pgvaultRepo struct {
	dir, repo, pw, cache string
	env, rootEnv         []string
	// archive is the archive_command that pushes into this repository;
	// empty: pgvault wal push with the folder repository's variables
	// inline (archiveCmd).
	archive string
	// lastID is the newest backup pgvault's regular backups stored here.
	lastID string
}

func (b *bench) newPgvaultRepo(name string) *pgvaultRepo {
	pv, err := b.newPgvaultRepoAt(name, "", nil, "pgvault: create the repository (encrypted, as postgres)")
	if err != nil {
		b.t.Fatal(err)
	}
	return pv
}

// newPgvaultRepoAt creates a pgvault repository at url, or in a folder
// named repo beside its password and cache when url is empty. storeEnv
// (a store's credentials) joins every pgvault command's environment;
// what names the `repo init` line in the report.
func (b *bench) newPgvaultRepoAt(name, url string, storeEnv []string, what string) (*pgvaultRepo, error) {
	dir := filepath.Join(b.work, name)
	os.RemoveAll(dir)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create the folder of repository %s: %w", name, err)
	}
	if url == "" {
		url = filepath.Join(dir, "repo")
	}
	pv := &pgvaultRepo{dir: dir, repo: url, pw: filepath.Join(dir, "password"), cache: filepath.Join(dir, "cache")}
	if err := os.WriteFile(pv.pw, []byte("bench secret\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write the password of repository %s: %w", name, err)
	}
	ownByPostgres(b.t, dir)
	// Clipped: callers append a variable for one command to these.
	pv.env = slices.Clip(append([]string{"PGVAULT_REPO=" + pv.repo, "PGVAULT_PASSWORD_FILE=" + pv.pw, "PGVAULT_CACHE_DIR=" + pv.cache}, storeEnv...))
	pv.rootEnv = slices.Clip(append([]string{"PGVAULT_REPO=" + pv.repo, "PGVAULT_PASSWORD_FILE=" + pv.pw, "PGVAULT_CACHE_DIR=" + b.rootDir("pgvault-root-cache")}, storeEnv...))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := pgCmd(ctx, pgvaultBin, "repo", "init")
	cmd.Env = append(cmd.Env, pv.env...)
	b.record(what, cmd)
	if _, err := measure(cmd); err != nil {
		return nil, fmt.Errorf("pgvault repo init of %s: %w", name, err)
	}
	return pv, nil
}

func (pv *pgvaultRepo) archiveCmd() string {
	if pv.archive != "" {
		return pv.archive
	}
	return fmt.Sprintf("PGVAULT_REPO=%s PGVAULT_PASSWORD_FILE=%s PGVAULT_CACHE_DIR=%s %s wal push %%p", pv.repo, pv.pw, pv.cache, pgvaultBin)
}

func (b *bench) profFile(step string, r int) string {
	return filepath.Join(b.profDir, fmt.Sprintf("%s-r%d.prof", slug(step), r+1))
}

func (b *bench) pgvaultBackup(pv *pgvaultRepo, step string, r int) {
	b.pgvaultBackupAs(pv, step, r, ToolPgvault, "auto")
}

// pgvaultStream is the diagnostic full backup: a new repository, the
// files sent by BASE_BACKUP.
func (b *bench) pgvaultStream(r int) {
	pv := b.newPgvaultRepo(fmt.Sprintf("pgvault-stream-r%d", r))
	defer os.RemoveAll(pv.dir)
	b.pgvaultBackupAs(pv, StepFull, r, ToolPgvaultStream, "stream")
}

func (b *bench) pgvaultBackupAs(pv *pgvaultRepo, step string, r int, tool, method string) {
	b.prepare(pv.archiveCmd())
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	prof := b.profFile(step, r)
	cmd := pgCmd(ctx, pgvaultBin, "--pg", b.c.ReplicationConnString(), "--output", "json", "backup", "--fast-checkpoint", "--method", method)
	if tool == ToolPgvault {
		cmd.Env = append(cmd.Env, append(pv.env, "PGVAULT_CPUPROFILE="+prof)...)
		b.record("pgvault: backup (as postgres, on the database host; archive_command = pgvault wal push %p)", cmd)
	} else {
		cmd.Env = append(cmd.Env, pv.env...)
		b.record("pgvault: diagnostic full backup into a new repository, the files sent by BASE_BACKUP", cmd)
	}
	s0 := serverCPU(b.c.DataDir())
	u, err := measure(cmd)
	s1 := serverCPU(b.c.DataDir())
	if err != nil {
		b.fail(step, tool, err)
		return
	}
	var rep struct {
		ID          string `json:"id"`
		StoredBytes int64  `json:"stored_bytes"`
		Method      string `json:"method"`
	}
	if err := json.Unmarshal([]byte(u.Stdout), &rep); err != nil {
		b.fail(step, tool, fmt.Errorf("backup report: %v: %s", err, u.Stdout))
		return
	}
	if tool == ToolPgvault {
		pv.lastID = rep.ID
	}
	// On the database host as postgres, auto must read locally: a silent
	// fall back to streaming would measure the wrong thing.
	want := method
	if method == "auto" {
		want = "local"
	}
	if rep.Method != want {
		b.fail(step, tool, fmt.Errorf("backup ran with method %q, want %s", rep.Method, want))
		return
	}
	b.res.Add(step, tool, sampleOf(u, s1-s0, float64(rep.StoredBytes)/1e6))
	if tool == ToolPgvault {
		b.profiles[step], b.lastUsage[step] = prof, u
	}
	b.logf("%s %s: %.2fs, %.1f MB stored", tool, step, u.Wall.Seconds(), float64(rep.StoredBytes)/1e6)
}

// pgvaultSynthetic takes a synthetic backup of parent, rolled forward to
// target with the WAL pgvault archived: as root (it mounts FUSE and runs
// PostgreSQL as postgres), with no connection to the database. It returns
// the new backup's ID ("" when it failed).
func (b *bench) pgvaultSynthetic(pv *pgvaultRepo, step string, r int, parent, target string) string {
	dropCaches()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	prof := b.profFile(step+" synthetic", r)
	cmd := exec.CommandContext(ctx, pgvaultBin, "--output", "json", "backup", "--synthetic", "--from", parent, "--to-lsn", target,
		"--pg-bin", pgtest.BinDir)
	cmd.Env = append(os.Environ(), append(pv.rootEnv, "PGVAULT_CPUPROFILE="+prof)...)
	b.record("pgvault: synthetic backup (as root: FUSE; PostgreSQL replays the archived WAL on an instant mount of the previous backup, no database connection)", cmd)
	s0 := serverCPU(b.c.DataDir())
	u, err := measure(cmd)
	s1 := serverCPU(b.c.DataDir())
	// Root wrote objects the postgres-run commands must read.
	ownByPostgres(b.t, pv.dir)
	if err != nil {
		b.fail(step, ToolPgvaultSynthetic, err)
		return ""
	}
	var rep struct {
		ID          string             `json:"id"`
		StoredBytes int64              `json:"stored_bytes"`
		BytesRead   int64              `json:"bytes_read"`
		Phases      map[string]float64 `json:"phases"`
	}
	if err := json.Unmarshal([]byte(u.Stdout), &rep); err != nil || rep.ID == "" {
		b.fail(step, ToolPgvaultSynthetic, fmt.Errorf("synthetic backup report: %v: %s", err, u.Stdout))
		return ""
	}
	b.res.Add(step, ToolPgvaultSynthetic, sampleOf(u, s1-s0, float64(rep.StoredBytes)/1e6))
	b.profiles[step+" synthetic"], b.lastUsage[step+" synthetic"] = prof, u
	b.logf("pgvault synthetic %s: %.2fs (mount %.2fs, start %.2fs, replay %.2fs, stop %.2fs, store %.2fs), %.1f MB read from the replay, %.1f MB stored",
		step, u.Wall.Seconds(), rep.Phases["mount"], rep.Phases["start"], rep.Phases["recovery"], rep.Phases["stop"], rep.Phases["store"],
		float64(rep.BytesRead)/1e6, float64(rep.StoredBytes)/1e6)
	if r == 0 {
		b.note("Synthetic backup, %s, round 1: %.2f s in all: mount %.2f s, PostgreSQL's start %.2f s, replay %.2f s, stop (restartpoint) %.2f s, store %.2f s; %.1f MB read from the replay, %.1f MB stored.",
			step, u.Wall.Seconds(), rep.Phases["mount"], rep.Phases["start"], rep.Phases["recovery"], rep.Phases["stop"], rep.Phases["store"],
			float64(rep.BytesRead)/1e6, float64(rep.StoredBytes)/1e6)
	}
	return rep.ID
}

// pgvaultRestoreEnd restores backup id with the given recovery target,
// starts it and waits until it has promoted: the time to a writable copy
// at the end of the WAL, replay included.
func (b *bench) pgvaultRestoreEnd(pv *pgvaultRepo, tool, id string, target ...string) {
	dir := filepath.Join(b.pgDir(), "data")
	defer os.RemoveAll(dir)
	dropCaches()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := pgCmd(ctx, pgvaultBin, append([]string{"--output", "json", "restore", id, "--target", dir, "--target-action", "promote"}, target...)...)
	cmd.Env = append(cmd.Env, pv.env...)
	b.record("pgvault: restore for "+tool+", then start until promoted", cmd)
	t0 := time.Now()
	if _, err := measure(cmd); err != nil {
		b.fail(StepRestoreEnd, tool, err)
		return
	}
	os.Chmod(dir, 0o700)
	srv, _, err := b.startServer(dir)
	if err != nil {
		b.fail(StepRestoreEnd, tool, err)
		return
	}
	defer srv.stop()
	if err := waitUntil(nil, 10*time.Millisecond, 10*time.Minute, func() bool {
		v, err := sqlString(srv.port, "SELECT pg_is_in_recovery()::text")
		return err == nil && v == "false"
	}); err != nil {
		b.fail(StepRestoreEnd, tool, fmt.Errorf("not promoted: %v", err))
		return
	}
	s := NewSample()
	s.Wall = time.Since(t0).Seconds()
	b.res.Add(StepRestoreEnd, tool, s)
	b.logf("%s %s: %.2fs", tool, StepRestoreEnd, s.Wall)
}

func (b *bench) pgvaultRestore(pv *pgvaultRepo, r int) {
	target, u, ok := b.pgvaultCopyOut(pv, b.profFile(StepRestore, r))
	if !ok {
		return
	}
	defer os.RemoveAll(target)
	b.startRestored(ToolPgvault, target, u.Wall)
}

// pgvaultCopyOut restores the latest backup (as postgres, page cache
// dropped first) into a new folder, records the restore (StepRestore of
// ToolPgvault, with the CPU profile prof) and returns the folder, which
// the caller removes; ok is false when the restore failed.
func (b *bench) pgvaultCopyOut(pv *pgvaultRepo, prof string) (target string, u usage, ok bool) {
	target = filepath.Join(b.pgDir(), "data")
	dropCaches()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := pgCmd(ctx, pgvaultBin, "--output", "json", "restore", "latest", "--target", target, "--to-immediate", "--target-action", "promote")
	cmd.Env = append(cmd.Env, append(pv.env, "PGVAULT_CPUPROFILE="+prof)...)
	b.record("pgvault: restore (as postgres)", cmd)
	u, err := measure(cmd)
	if err != nil {
		os.RemoveAll(target)
		b.fail(StepRestore, ToolPgvault, err)
		return "", u, false
	}
	mb := treeMB(target)
	b.res.Add(StepRestore, ToolPgvault, sampleOf(u, NaN(), mb))
	b.profiles[StepRestore], b.lastUsage[StepRestore] = prof, u
	b.logf("pgvault restore: %.2fs, %.0f MB", u.Wall.Seconds(), mb)
	return target, u, true
}

// startRestored starts PostgreSQL on a restored directory and records the
// start and restore-to-first-query figures.
func (b *bench) startRestored(tool, dir string, restore time.Duration) {
	os.Chmod(dir, 0o700)
	srv, took, err := b.startServer(dir)
	if err != nil {
		b.fail(StepStart, tool, err)
		b.res.Fail(StepFirstQuery, tool, "the restored copy did not start")
		return
	}
	srv.stop()
	s := NewSample()
	s.Wall = took.Seconds()
	b.res.Add(StepStart, tool, s)
	s.Wall = (took + restore).Seconds()
	b.res.Add(StepFirstQuery, tool, s)
}

func NaN() float64 { return NewSample().Wall }

// waitMounted waits until dir is a mount point and ready(dir) holds, or
// the process exits. It looks every 2 ms (a look is a read of
// /proc/self/mountinfo and a stat): the instant mount's time to first
// query runs through it, and a coarser poll would add up to its period.
func waitMounted(p *bgProc, dir string, ready func() bool, timeout time.Duration) error {
	// The mount's own readiness has no event to wait on: look every 2 ms
	// (the time to first query is measured to the millisecond), and stop
	// at once when the process exits or the deadline passes.
	if err := waitUntil(p, 2*time.Millisecond, timeout, func() bool { return isMounted(dir) && ready() }); err != nil {
		return fmt.Errorf("not mounted: %w", err)
	}
	return nil
}

// waitUntil looks at cond at once and then every `every` until it holds.
// It gives up with an error when timeout passes or, if p is not nil,
// when p exits first (p's last words in the error).
func waitUntil(p *bgProc, every, timeout time.Duration, cond func() bool) error {
	var exited <-chan struct{} // nil, which never fires, without p
	if p != nil {
		exited = p.done
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-tick.C:
		case <-exited:
			if cond() {
				return nil
			}
			return fmt.Errorf("the process exited: %v\n%s", p.err, tail(p.out.String(), 15))
		case <-deadline.C:
			if p == nil {
				return fmt.Errorf("not so after %v", timeout)
			}
			return fmt.Errorf("not so after %v\n%s", timeout, tail(p.out.String(), 15))
		}
	}
}

func (b *bench) unmount(dir string) {
	// A process that has just exited may keep the mount busy a moment:
	// try every 250 ms for 5 s, then detach it.
	waitUntil(nil, 250*time.Millisecond, 5*time.Second, func() bool {
		return !isMounted(dir) || rootCmd(context.Background(), "umount", dir).Run() == nil && !isMounted(dir)
	})
	if isMounted(dir) {
		rootCmd(context.Background(), "umount", "-l", dir).Run()
	}
}

// instant is a running instant mount of a pgvault backup.
type instant struct {
	mnt, scratch string
	p            *bgProc
	start        time.Time     // when the mount command started
	ready        time.Duration // from start until PG_VERSION was visible
}

// mountInstant starts `pgvault mount --backup latest --to-immediate` (as
// root, owner postgres by default) on a new mount point and scratch
// folder and waits until the data directory is visible. prof, when not
// empty, is where the mount writes its CPU profile.
func (b *bench) mountInstant(pv *pgvaultRepo, prof string, env ...string) (*instant, error) {
	in := &instant{mnt: b.pgDir(), scratch: b.rootDir("scratch")}
	cmd := rootCmd(context.Background(), pgvaultBin, "mount", in.mnt, "--backup", "latest", "--to-immediate", "--scratch", in.scratch)
	cmd.Env = append(cmd.Env, pv.rootEnv...)
	cmd.Env = append(cmd.Env, env...)
	if prof != "" {
		cmd.Env = append(cmd.Env, "PGVAULT_CPUPROFILE="+prof)
	}
	b.record("pgvault: instant mount (as root), then pg_ctl start on the mount point", cmd)
	in.start = time.Now()
	b.led.add("mount", in.mnt)
	p, err := b.startBG(cmd)
	if err != nil {
		os.RemoveAll(in.scratch)
		return nil, err
	}
	in.p = p
	if err := waitMounted(p, in.mnt, func() bool { _, err := os.Stat(filepath.Join(in.mnt, "PG_VERSION")); return err == nil }, 5*time.Minute); err != nil {
		in.close(b, 30*time.Second)
		return nil, err
	}
	in.ready = time.Since(in.start)
	return in, nil
}

// close stops the mount process (SIGTERM: it unmounts; stop any server
// on the mount first), makes sure nothing stays mounted, removes the
// scratch folder and returns the mount process's usage.
func (in *instant) close(b *bench, grace time.Duration) usage {
	u := in.p.stop(syscall.SIGTERM, grace)
	b.unmount(in.mnt)
	os.RemoveAll(in.scratch)
	return u
}

func (b *bench) pgvaultInstant(pv *pgvaultRepo, r int) {
	b.instantFirstQuery(pv, ToolPgvaultMount, b.profFile(StepFirstQuery, r), b.mountDetail)
}

// pgvaultInstantRemote is pgvaultInstant on a repository every request to
// which takes ms milliseconds longer, as an object store in another
// region does: the test fault backend's latency (PGVAULT_TEST_FAULTS,
// every call delayed, nothing else injected) on the same repository.
func (b *bench) pgvaultInstantRemote(pv *pgvaultRepo, ms int) {
	b.instantFirstQuery(pv, ToolPgvaultMountRemote, "", true, fmt.Sprintf("PGVAULT_TEST_FAULTS=seed=1,latency=1,latency_ms=%d", ms))
}

// instantFirstQuery times an instant mount (with env added to its
// environment) to the first query, recorded as tool; detail also records
// when the data directory became visible.
func (b *bench) instantFirstQuery(pv *pgvaultRepo, tool, prof string, detail bool, env ...string) {
	dropCaches()
	in, err := b.mountInstant(pv, prof, env...)
	if err != nil {
		b.fail(StepFirstQuery, tool, err)
		return
	}
	srv, took, err := b.startServer(in.mnt)
	first := time.Since(in.start)
	if err != nil {
		in.close(b, 30*time.Second)
		b.fail(StepFirstQuery, tool, err)
		return
	}
	srv.stop()
	u := in.close(b, 60*time.Second)
	s := sampleOf(u, NaN(), NaN())
	s.Wall = first.Seconds()
	b.res.Add(StepFirstQuery, tool, s)
	st := NewSample()
	st.Wall = took.Seconds()
	b.res.Add(StepStart, tool, st)
	if detail {
		st.Wall = in.ready.Seconds()
		b.res.Add(StepMountReady, tool, st)
	}
	b.logf("%s: mounted in %.2fs, first query after %.2fs", tool, in.ready.Seconds(), first.Seconds())
}

func (b *bench) pgvaultBrowse(pv *pgvaultRepo, r int) {
	mnt := b.rootDir("mnt")
	dropCaches()
	prof := b.profFile(StepMountRead, r)
	cmd := rootCmd(context.Background(), pgvaultBin, "mount", mnt)
	cmd.Env = append(cmd.Env, append(pv.rootEnv, "PGVAULT_CPUPROFILE="+prof)...)
	b.record("pgvault: browse mount (as root), then read every file of snapshots/latest", cmd)
	b.mountRead(ToolPgvault, cmd, mnt, "", func(u usage) {
		b.profiles[StepMountRead], b.lastUsage[StepMountRead] = prof, u
	})
}

// mountRead starts a mount, waits for snapshots/latest, reads every file
// under it (below sub) and records both times.
func (b *bench) mountRead(tool string, cmd *exec.Cmd, mnt, sub string, done func(usage)) {
	start := time.Now()
	b.led.add("mount", mnt)
	p, err := b.startBG(cmd)
	if err != nil {
		b.fail(StepMountRead, tool, err)
		return
	}
	defer b.unmount(mnt)
	latest := filepath.Join(mnt, "snapshots", "latest")
	var dir string
	ready := func() bool {
		d, err := filepath.EvalSymlinks(latest)
		if err != nil {
			return false
		}
		dir = d
		return true
	}
	if err := waitMounted(p, mnt, ready, 2*time.Minute); err != nil {
		p.stop(syscall.SIGTERM, 30*time.Second)
		b.fail(StepMountRead, tool, err)
		return
	}
	seen := time.Since(start)
	t0 := time.Now()
	n, err := readTree(filepath.Join(dir, sub))
	read := time.Since(t0)
	sig := syscall.SIGTERM
	if tool == ToolRestic {
		sig = syscall.SIGINT
	}
	u := p.stop(sig, 60*time.Second)
	if err != nil {
		b.fail(StepMountRead, tool, err)
		return
	}
	s := NewSample()
	s.Wall = seen.Seconds()
	b.res.Add(StepMountSeen, tool, s)
	s = sampleOf(u, NaN(), float64(n)/1e6)
	s.Wall = read.Seconds()
	b.res.Add(StepMountRead, tool, s)
	if done != nil {
		done(u)
	}
	b.logf("%s mount: visible after %.2fs, read %.0f MB in %.2fs", tool, seen.Seconds(), float64(n)/1e6, read.Seconds())
}

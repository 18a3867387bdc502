package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"golang.org/x/sys/unix"

	"github.com/pgvault/pgvault/integration/pgtest"
	"github.com/pgvault/pgvault/internal/pg/wal"
)

// Mounts run as root (only root may mount FUSE here); PostgreSQL, and
// with it restore_command (`pgvault wal fetch`), runs as postgres. The
// repository is the postgres-owned one of a pitrVault (WAL archived by
// archive_command = `pgvault wal push`); root's pgvault commands get their
// own cache folder.

// rootEnv is the environment of pgvault commands run as root.
func (v *pitrVault) rootEnv(t *testing.T) []string {
	return []string{"PGVAULT_REPO=" + v.repo, "PGVAULT_PASSWORD_FILE=" + v.pw, "PGVAULT_CACHE_DIR=" + t.TempDir()}
}

// runRoot runs pgvault as root.
func runRoot(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, pgvaultBin, args...)
	cmd.Env = append(filteredEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run pgvault %v: %v", args, err)
	}
	return result{code, out.String(), errb.String()}
}

// mountProc is a running `pgvault mount`.
type mountProc struct {
	t   *testing.T
	cmd *exec.Cmd
	mnt string
	log string // its stdout and stderr
	// waitFn waits up to d for the process to exit.
	waitFn func(d time.Duration) (error, bool)
}

// startMount starts `pgvault mount MNT args...` as root and waits until
// the mount is there.
func startMount(t *testing.T, env []string, mnt string, args ...string) *mountProc {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), "mount-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pgvaultBin, append([]string{"--log-level", "info", "mount", mnt}, args...)...)
	cmd.Env = append(filteredEnv(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	m := &mountProc{t: t, cmd: cmd, mnt: mnt, log: logf.Name()}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		}
		if isMounted(mnt) {
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	waitFor(t, 60*time.Second, "pgvault mount to mount "+mnt, func() (bool, error) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("pgvault mount %s %v exited before mounting (%v):\n%s", mnt, args, err, m.output())
		default:
		}
		if isMounted(mnt) {
			return true, nil
		}
		return false, fmt.Errorf("its output so far:\n%s", m.output())
	})
	t.Logf("pgvault mount %v: mounted in %.2fs", args, time.Since(start).Seconds())
	m.waitFn = func(d time.Duration) (error, bool) {
		select {
		case err := <-exited:
			return err, true
		case <-time.After(d):
			return nil, false
		}
	}
	return m
}

func (m *mountProc) output() string {
	b, _ := os.ReadFile(m.log)
	return string(b)
}

// stop sends SIGTERM: pgvault unmounts and exits 0.
func (m *mountProc) stop() {
	m.t.Helper()
	m.cmd.Process.Signal(syscall.SIGTERM)
	err, done := m.waitFn(60 * time.Second)
	if !done {
		m.t.Fatalf("pgvault mount did not exit within 60s of SIGTERM:\n%s", m.output())
	}
	if err != nil {
		m.t.Fatalf("pgvault mount exited with %v after SIGTERM:\n%s", err, m.output())
	}
	if isMounted(m.mnt) {
		m.t.Fatalf("%s is still mounted after pgvault mount exited", m.mnt)
	}
}

// kill9 kills the mount process with SIGKILL, leaving a stale mount.
func (m *mountProc) kill9() {
	m.t.Helper()
	m.cmd.Process.Signal(syscall.SIGKILL)
	if _, done := m.waitFn(30 * time.Second); !done {
		m.t.Fatal("pgvault mount survived SIGKILL")
	}
}

// isMounted reports whether dir is a mount point (/proc/self/mountinfo).
func isMounted(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && fields[4] == dir {
			return true
		}
	}
	return false
}

// treeEntry is what ls -l shows of one path.
type treeEntry struct {
	Mode   fs.FileMode
	Size   int64
	UID    uint32
	GID    uint32
	MTime  int64
	Target string
}

// listTree records every path below root with its metadata. A
// tablespace link (pg_tblspc/<oid> -> folder) counts as that folder.
func listTree(t *testing.T, root string) map[string]treeEntry {
	t.Helper()
	out := map[string]treeEntry{}
	walkTree(t, root, "", out)
	return out
}

func walkTree(t *testing.T, root, prefix string, out map[string]treeEntry) {
	t.Helper()
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.Join(prefix, rel)
		if fi.Mode()&fs.ModeSymlink != 0 && filepath.Dir(rel) == "pg_tblspc" {
			target, err := filepath.EvalSymlinks(p)
			if err != nil {
				return err
			}
			walkTree(t, target, rel, out)
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		e := treeEntry{Mode: fi.Mode(), UID: st.Uid, GID: st.Gid, MTime: fi.ModTime().Unix()}
		if fi.Mode().IsRegular() {
			e.Size = fi.Size()
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			e.Target, _ = os.Readlink(p)
		}
		if rel == "." {
			e.MTime = 0 // a restore gives the target folder its own time
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
}

// repoListing records every object of a file repository with its size
// and modification time (locks excluded: commands may take them).
func repoListing(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if strings.HasPrefix(rel, "locks") {
			return nil
		}
		out[rel] = fmt.Sprintf("%d %d", fi.Size(), fi.ModTime().UnixNano())
		return nil
	})
	return out
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestBrowseMount(t *testing.T) {
	v := newPITRVault(t)
	c := pgtest.Start(t, pgtest.Options{Settings: v.archiveSettings()})
	c.PgbenchInit(t, 1)
	c.CreateMarkers(t)
	tsLocation := c.TablespaceDir(t)
	c.Exec(t, fmt.Sprintf("CREATE TABLESPACE ts LOCATION '%s'", tsLocation))
	c.Exec(t, "CREATE TABLE in_ts TABLESPACE ts AS SELECT g FROM generate_series(1, 10000) g")
	b1 := v.backup(c)
	c.Exec(t, "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 50 = 0")
	pitrMarker(t, c, "after b1")
	b2 := v.backup(c)
	pitrSwitchAndWait(t, c)
	env := v.rootEnv(t)

	mnt := pgtest.TempDir(t)
	m := startMount(t, env, mnt)
	snap1 := filepath.Join(mnt, "snapshots", b1.ID[:8])
	snap2 := filepath.Join(mnt, "snapshots", b2.ID[:8])
	if target, err := os.Readlink(filepath.Join(mnt, "snapshots", "latest")); err != nil || target != b2.ID[:8] {
		t.Fatalf("snapshots/latest -> %q, %v; want %s", target, err, b2.ID[:8])
	}

	t.Run("ls -lR", func(t *testing.T) {
		out, err := exec.Command("ls", "-lR", snap1).CombinedOutput()
		if err != nil {
			t.Fatalf("ls -lR: %v\n%s", err, out)
		}
		if n := strings.Count(string(out), "\n"); n < 900 {
			t.Fatalf("ls -lR printed %d lines", n)
		}
		// Exact sizes, modes, owners and times: the same as a restore.
		tsCopy := filepath.Join(pgtest.TempDir(t), "ts")
		restored, _ := v.restore(t, "", b1.ID, "--no-recovery-config", "--tablespace-map", tsLocation+"="+tsCopy)
		want, got := listTree(t, restored), listTree(t, snap1)
		// A restore to a new tablespace location rewrites these two.
		for _, p := range []string{"tablespace_map", "backup_manifest"} {
			delete(want, p)
			delete(got, p)
		}
		for p, w := range want {
			if g, ok := got[p]; !ok || g != w {
				t.Fatalf("%s: mount shows %+v, restore wrote %+v", p, g, w)
			}
		}
		for p := range got {
			if _, ok := want[p]; !ok {
				t.Fatalf("mount shows %s, which the restore did not write", p)
			}
		}
		if out, err := exec.Command("diff", "-r", "-x", "tablespace_map", "-x", "backup_manifest", snap1, restored).CombinedOutput(); err != nil {
			t.Fatalf("diff -r mount restore: %v\n%s", err, out)
		}
	})

	t.Run("diff -r between snapshots", func(t *testing.T) {
		rel := c.QueryString(t, "SELECT pg_relation_filepath('pgbench_accounts')")
		out, err := exec.Command("diff", "-rq", snap1, snap2).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("diff -rq: %v (want exit 1: the snapshots differ)\n%s", err, out)
		}
		if !strings.Contains(string(out), rel) {
			t.Fatalf("diff -rq does not list the updated table %s:\n%s", rel, out)
		}
	})

	t.Run("cp -a passes pg_verifybackup", func(t *testing.T) {
		dst := filepath.Join(pgtest.TempDir(t), "copy")
		start := time.Now()
		if out, err := exec.Command("cp", "-a", filepath.Join(mnt, "snapshots", "latest")+"/", dst).CombinedOutput(); err != nil {
			t.Fatalf("cp -a: %v\n%s", err, out)
		}
		var bytes int64
		filepath.Walk(dst, func(_ string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				bytes += fi.Size()
			}
			return nil
		})
		t.Logf("cp -a of snapshot %s: %.1f MB in %.2fs", b2.ID[:8], float64(bytes)/1e6, time.Since(start).Seconds())
		verifyBackup(t, dst)
	})

	t.Run("cat of a WAL segment equals what is stored", func(t *testing.T) {
		seg := strings.TrimSpace(c.QueryString(t, "SELECT pg_walfile_name('"+b1.StopLSN+"')"))
		got, err := os.ReadFile(filepath.Join(mnt, "wal", seg[:8], seg))
		if err != nil {
			t.Fatal(err)
		}
		dest := filepath.Join(v.base, "fetched")
		v.must("wal", "fetch", seg, dest)
		want, err := os.ReadFile(dest)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) || len(got) != 16<<20 {
			t.Fatalf("wal/%s/%s: %d bytes differ from the %d stored", seg[:8], seg, len(got), len(want))
		}
		if _, err := os.Stat(filepath.Join(mnt, "wal", seg[:8], "000000010000000000000FFF")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("a WAL file that is not stored: %v", err)
		}
	})

	t.Run("read-only", func(t *testing.T) {
		err := os.WriteFile(filepath.Join(snap1, "PG_VERSION"), []byte("16\n"), 0o600)
		if !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EACCES) {
			t.Fatalf("write into a snapshot: %v, want EROFS", err)
		}
		if err := os.Mkdir(filepath.Join(snap1, "x"), 0o700); !errors.Is(err, syscall.EROFS) {
			t.Fatalf("mkdir in a snapshot: %v, want EROFS", err)
		}
	})

	// Inode numbers are the same on the next mount.
	ino := inode(t, filepath.Join(snap1, "global", "pg_control"))
	m.stop()
	startMount(t, env, mnt)
	if again := inode(t, filepath.Join(snap1, "global", "pg_control")); again != ino {
		t.Fatalf("inode number changed across mounts: %d then %d", ino, again)
	}
}

func TestMountErrors(t *testing.T) {
	v := newPITRVault(t)
	c := pgtest.Start(t, pgtest.Options{Settings: v.archiveSettings()})
	v.backup(c)
	pitrSwitchAndWait(t, c)
	env := v.rootEnv(t)
	oneLine := func(t *testing.T, r result, code int, want string) {
		t.Helper()
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		if r.code != code || len(lines) != 1 || !strings.Contains(lines[0], want) {
			t.Fatalf("exit %d (want %d), stderr (want one line with %q):\n%s", r.code, code, want, r.stderr)
		}
	}

	notEmpty := t.TempDir()
	os.WriteFile(filepath.Join(notEmpty, "file"), nil, 0o600)
	oneLine(t, runRoot(t, env, "mount", notEmpty), 1, "is not empty")
	oneLine(t, runRoot(t, env, "mount", filepath.Join(t.TempDir(), "missing")), 1, "does not exist")
	oneLine(t, runRoot(t, env, "mount", t.TempDir(), "--backup", "latest"), 2, "needs --scratch")
	oneLine(t, runRoot(t, env, "mount", t.TempDir(), "--scratch", t.TempDir()), 2, "needs --backup")

	mnt := pgtest.TempDir(t)
	scratch := t.TempDir()
	startMount(t, env, mnt, "--backup", "latest", "--scratch", scratch)
	oneLine(t, runRoot(t, env, "mount", mnt), 1, "already a mount point")
	oneLine(t, runRoot(t, env, "mount", pgtest.TempDir(t), "--backup", "latest", "--scratch", scratch), 1, "in use by another mount")
	oneLine(t, runRoot(t, env, "umount", t.TempDir()), 1, "nothing is mounted")

}

// instantDir mounts a backup in instant mode on a fresh postgres-owned
// mountpoint.
func instantDir(t *testing.T, env []string, scratch string, args ...string) (*mountProc, string) {
	t.Helper()
	mnt := pgtest.TempDir(t)
	m := startMount(t, env, mnt, append([]string{"--scratch", scratch}, args...)...)
	return m, mnt
}

func TestInstantMount(t *testing.T) {
	v := newPITRVault(t)
	c := pgtest.Start(t, pgtest.Options{Settings: v.archiveSettings()})
	c.PgbenchInit(t, 2)
	c.CreateMarkers(t)
	c.Exec(t, fmt.Sprintf("CREATE TABLESPACE ts LOCATION '%s'", c.TablespaceDir(t)))
	c.Exec(t, "CREATE TABLE in_ts TABLESPACE ts AS SELECT g FROM generate_series(1, 10000) g")
	b := v.backup(c)
	pitrMarker(t, c, "m1")
	m2, _ := pitrMarker(t, c, "m2")
	pitrMarker(t, c, "m3")
	pitrSwitchAndWait(t, c)
	c.Stop(t, "fast") // nothing more goes into the repository from here on
	env := v.rootEnv(t)

	// The repository before: every object with its size and time, and
	// the stats; afterwards they must be the same.
	before := repoListing(t, v.repo)
	statsBefore := v.must("--output", "json", "repo", "stats")

	// Two instant mounts of the same backup side by side, each with its
	// own scratch folder: one at the latest point, one at a time between
	// m2 and m3.
	latestMount, latestDir := instantDir(t, env, t.TempDir(), "--backup", b.ID, "--hydrate", "--hydrate-rate", "100MiB")
	pitrScratch := t.TempDir()
	pitrMount, pitrDir := instantDir(t, env, pitrScratch, "--backup", b.ID, "--to", m2.CommittedAt.Format(time.RFC3339Nano))
	_ = pitrMount

	fi, err := os.Stat(latestDir)
	if err != nil || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid == 0 {
		t.Fatalf("mount root: %v %v: PostgreSQL needs mode 0700 and its own user", fi.Mode(), err)
	}
	for _, hidden := range []string{"postmaster.pid", "postmaster.opts", "tablespace_map"} {
		if _, err := os.Stat(filepath.Join(latestDir, hidden)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s is visible in the instant view", hidden)
		}
	}
	conf, _ := os.ReadFile(filepath.Join(latestDir, "postgresql.auto.conf"))
	// WAL comes out of the mount itself: PostgreSQL needs no repository access.
	for _, want := range []string{"restore_command = 'cp ''" + latestDir + "/.pgvault-wal''/%f %p'", "archive_mode = 'off'"} {
		if !strings.Contains(string(conf), want) {
			t.Fatalf("postgresql.auto.conf lacks %q:\n%s", want, conf)
		}
	}

	// restore_command's cp copies from the served WAL into pg_wal with
	// copy_file_range, which the mount answers in one request; the same
	// segment asked for again (PostgreSQL does as recovery ends) comes
	// from the mount's last-segment cache. Both must be the archived
	// bytes, and a file the copy created must show its size at once.
	lsn, err := pglogrepl.ParseLSN(b.StartLSN)
	if err != nil {
		t.Fatal(err)
	}
	const segSize = 16 << 20
	segName := wal.SegmentOf(1, lsn, segSize).Name(segSize)
	fetched := filepath.Join(pgtest.TempDir(t), segName)
	v.must("wal", "fetch", segName, fetched)
	segment, err := os.ReadFile(fetched)
	if err != nil || len(segment) != segSize {
		t.Fatalf("wal fetch %s: %d bytes, %v", segName, len(segment), err)
	}
	t.Run("WAL copied into the mount", func(t *testing.T) {
		name, want := segName, segment
		for i := range 2 {
			dst := filepath.Join(latestDir, "pg_wal", fmt.Sprintf("copytest%d", i))
			copyFileRange(t, filepath.Join(latestDir, ".pgvault-wal", name), dst, 5<<20)
			if fi, err := os.Stat(dst); err != nil || fi.Size() != segSize {
				t.Fatalf("copy %d: stat %v, %v", i, fi, err)
			}
			got, err := os.ReadFile(dst)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("copy %d of %s through the mount differs from wal fetch (%d bytes, %v)", i, name, len(got), err)
			}
			if err := os.Remove(dst); err != nil {
				t.Fatal(err)
			}
		}
	})

	// restore_command's target: a whole segment copied into RECOVERYXLOG
	// becomes a reference to the repository's copy, with no bytes in the
	// scratch folder and nothing for PostgreSQL's fsync to write.
	t.Run("WAL copied into RECOVERYXLOG is a reference", func(t *testing.T) {
		scratch := t.TempDir()
		m, dir := instantDir(t, env, scratch, "--backup", b.ID, "--to-immediate")
		upper := func() int64 {
			var n int64
			filepath.WalkDir(filepath.Join(scratch, "upper"), func(_ string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					if fi, err := d.Info(); err == nil {
						n += fi.Size()
					}
				}
				return nil
			})
			return n
		}
		before := upper()
		dst := filepath.Join(dir, "pg_wal", "RECOVERYXLOG")
		copyFileRange(t, filepath.Join(dir, ".pgvault-wal", segName), dst, 1<<30)
		if grew := upper() - before; grew > 1<<20 {
			t.Fatalf("the copy into RECOVERYXLOG took %d bytes of scratch space, want a reference", grew)
		}
		got, err := os.ReadFile(dst)
		if err != nil || !bytes.Equal(got, segment) {
			t.Fatalf("RECOVERYXLOG reads %d bytes, not %s (%v)", len(got), segName, err)
		}
		if err := os.Remove(dst); err != nil {
			t.Fatal(err)
		}
		m.stop()
	})

	start := time.Now()
	r1 := pgtest.StartOn(t, latestDir, pgtest.Options{})
	r1.WaitRecoveryDone(t)
	t.Logf("instant mount at latest: PostgreSQL started and promoted in %.1fs", time.Since(start).Seconds())
	// The prepared pg_control (state and CRC rewritten) is accepted, and
	// the first start skips the fsync of every file.
	wantLog(t, r1, "database system was shut down in recovery", "database system was interrupted")
	r2 := pgtest.StartOn(t, pitrDir, pgtest.Options{})
	r2.WaitRecoveryDone(t)
	if r1.Port() == r2.Port() {
		t.Fatal("both servers on one port")
	}
	wantNotes(t, r1, "m1", "m2", "m3")
	wantNotes(t, r2, "m1", "m2")
	if n := r2.QueryInt(t, "SELECT count(*) FROM pgbench_accounts"); n != 200000 {
		t.Fatalf("pgbench_accounts has %d rows on the PITR mount", n)
	}
	// The tablespace is a folder inside the view (an in-place tablespace).
	if n := r1.QueryInt(t, "SELECT count(*) FROM in_ts"); n != 10000 {
		t.Fatalf("the table in the tablespace has %d rows", n)
	}
	if loc := r1.QueryString(t, "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts'"); !strings.HasPrefix(loc, "pg_tblspc/") {
		t.Fatalf("tablespace location %q: want an in-place tablespace inside the mount", loc)
	}
	r1.Exec(t, "INSERT INTO in_ts SELECT g FROM generate_series(1, 100) g")

	// To consistency, one segment of WAL: the mount turns the WAL
	// prefetcher off, which would fetch the segments after it first.
	t.Run("to consistency, without WAL prefetch", func(t *testing.T) {
		m, dir := instantDir(t, env, t.TempDir(), "--backup", b.ID, "--to-immediate")
		conf, _ := os.ReadFile(filepath.Join(dir, "postgresql.auto.conf"))
		if !strings.Contains(string(conf), "recovery_prefetch = 'off'") {
			t.Fatalf("postgresql.auto.conf of a mount to consistency lacks recovery_prefetch = 'off':\n%s", conf)
		}
		r := pgtest.StartOn(t, dir, pgtest.Options{})
		r.WaitRecoveryDone(t)
		wantNotes(t, r)
		// The archive holds segments past the backup (m1 to m3 and a
		// switch); only the backup's own is fetched before consistency.
		log, err := os.ReadFile(r.LogFile())
		if err != nil {
			t.Fatal(err)
		}
		before, _, ok := strings.Cut(string(log), "consistent recovery state reached")
		if n := strings.Count(before, "restored log file"); !ok || n != 1 {
			t.Fatalf("%d WAL files restored before consistency, want 1:\n%s", n, log)
		}
		// Once recovery asked for WAL, the mount loaded the system
		// catalogs: global/ and those of postgres, the one database here
		// besides the templates (a few hundred files in all).
		r.Stop(t, "fast")
		m.stop()
		out := m.output()
		_, after, ok := strings.Cut(out, "system catalogs loaded into the chunk cache")
		var files int
		if ok {
			if _, f, found := strings.Cut(after, "files="); found {
				fmt.Sscanf(f, "%d", &files)
			}
		}
		if files < 100 {
			t.Fatalf("the mount loaded %d catalog files, want the catalogs of global/ and postgres:\n%s", files, out)
		}
		// And, from the start, every folder's listing and the small
		// control files (pg_control, pg_xact/0000, ...).
		_, after, _ = strings.Cut(out, "folder listings and control files loaded into the chunk cache")
		var folders int
		if _, f, found := strings.Cut(after, "folders="); found {
			fmt.Sscanf(f, "%d", &folders)
		}
		files = 0
		if _, f, found := strings.Cut(after, "files="); found {
			fmt.Sscanf(f, "%d", &files)
		}
		if folders < 20 || files < 10 {
			t.Fatalf("the mount loaded %d folder listings and %d control files at its start, want every folder and the control files:\n%s", folders, files, out)
		}
	})

	t.Run("pgbench writes", func(t *testing.T) {
		out := r1.Pgbench(context.Background(), t, "-c", "2", "-T", "3")
		t.Logf("pgbench on the instant mount: %s", grepLine(out, "tps ="))
		r1.Checkpoint(t)
		if out := r1.Pgbench(context.Background(), t, "-S", "-c", "2", "-T", "2"); true {
			t.Logf("pgbench -S on the instant mount: %s", grepLine(out, "tps ="))
		}
		// pg_amcheck on the written mount.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, filepath.Join(pgtest.BinDir, "pg_amcheck"), "-h", "127.0.0.1", "-p", strconv.Itoa(r1.Port()),
			"-U", "postgres", "--install-missing", "-d", "postgres").CombinedOutput(); err != nil {
			t.Fatalf("pg_amcheck on the instant mount: %v\n%s", err, out)
		}
	})

	t.Run("kill -9 of the mount process, umount, remount", func(t *testing.T) {
		r2.Exec(t, "CREATE TABLE after_mount AS SELECT g FROM generate_series(1, 5000) g")
		r2.InsertMarker(t, "committed before the kill")
		pid := postmasterPID(t, pitrDir)
		pitrMount.kill9()
		if _, err := os.ReadDir(pitrDir); !errors.Is(err, syscall.ENOTCONN) {
			t.Fatalf("after kill -9: %v, want ENOTCONN (a stale mount)", err)
		}
		res := runRoot(t, env, "--output", "json", "umount", pitrDir)
		if res.code != 0 {
			t.Fatalf("pgvault umount of a stale mount: exit %d\n%s%s", res.code, res.stdout, res.stderr)
		}
		var ur struct {
			Stale bool `json:"stale"`
		}
		json.Unmarshal([]byte(res.stdout), &ur)
		if !ur.Stale || isMounted(pitrDir) {
			t.Fatalf("umount report %s; still mounted: %v", res.stdout, isMounted(pitrDir))
		}
		// The server lost its data directory: end it, then mount the same
		// scratch again and start it: what was committed is there.
		syscall.Kill(pid, syscall.SIGKILL)
		waitGone(t, pid)
		startMount(t, env, pitrDir, "--scratch", pitrScratch, "--backup", b.ID, "--to", m2.CommittedAt.Format(time.RFC3339Nano))
		r3 := pgtest.StartOn(t, pitrDir, pgtest.Options{})
		r3.WaitReady(t)
		// PostgreSQL's own state is in pg_control now: after its crash
		// it syncs the data directory before recovery, as anywhere.
		wantLog(t, r3, "database system was interrupted", "database system was shut down in recovery")
		wantNotes(t, r3, "m1", "m2", "committed before the kill")
		if n := r3.QueryInt(t, "SELECT count(*) FROM after_mount"); n != 5000 {
			t.Fatalf("after_mount has %d rows", n)
		}
	})

	// --hydrate copied the whole backup into the overlay meanwhile.
	waitFor(t, 60*time.Second, "hydration to finish", func() (bool, error) {
		out := latestMount.output()
		return strings.Contains(out, "hydration done"), fmt.Errorf("mount output:\n%s", out)
	})
	wantNotes(t, r1, "m1", "m2", "m3")
	out := r1.Pgbench(context.Background(), t, "-S", "-c", "2", "-T", "2")
	t.Logf("pgbench -S on the hydrated instant mount: %s", grepLine(out, "tps ="))

	// Stop everything; the repository is as it was.
	r1.Stop(t, "fast")
	latestMount.stop()
	after := repoListing(t, v.repo)
	if len(after) != len(before) {
		t.Fatalf("the repository has %d objects, had %d", len(after), len(before))
	}
	for p, w := range before {
		if after[p] != w {
			t.Fatalf("repository object %s changed: %s, was %s", p, after[p], w)
		}
	}
	if statsAfter := v.must("--output", "json", "repo", "stats"); statsAfter != statsBefore {
		t.Fatalf("repo stats changed:\n%s\nwas\n%s", statsAfter, statsBefore)
	}
	if res := v.run("repo", "check", "--read-data"); res.code != 0 {
		t.Fatalf("repo check --read-data: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}

// wantLog fails unless the server's log holds want and not unwanted.
func wantLog(t *testing.T, c *pgtest.Cluster, want, unwanted string) {
	t.Helper()
	log, err := os.ReadFile(c.LogFile())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), want) || strings.Contains(string(log), unwanted) {
		t.Fatalf("server log %s: want %q and not %q:\n%s", c.LogFile(), want, unwanted, log)
	}
}

// copyFileRange copies src to a new file dst with copy_file_range(2),
// first bytes at a time, then the rest, as cp does in one call.
func copyFileRange(t *testing.T, src, dst string, first int) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	for n := first; ; n = 1 << 30 {
		c, err := unix.CopyFileRange(int(in.Fd()), nil, int(out.Fd()), nil, n, 0)
		if err != nil {
			t.Fatalf("copy_file_range %s -> %s: %v", src, dst, err)
		}
		if c == 0 {
			return
		}
	}
}

func grepLine(out, substr string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, substr) {
			return strings.TrimSpace(l)
		}
	}
	return "(no " + substr + " line)"
}

func postmasterPID(t *testing.T, dataDir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("process %d to end", pid), func() (bool, error) {
		return syscall.Kill(pid, 0) != nil, nil
	})
}

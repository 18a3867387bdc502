package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pgvault/pgvault/internal/pg"
)

// Timeouts for waiting on the server. Starting may replay a lot of WAL
// (restore tests), so it is generous.
const (
	startTimeout = 120 * time.Second
	stopTimeout  = 120 * time.Second
	readyTimeout = 120 * time.Second
	logTailLines = 30
)

// Options configure a cluster. The zero value is a cluster with data
// checksums on a free port.
type Options struct {
	// Checksums turns data checksums on or off at initdb; nil means on.
	// StartOn ignores it.
	Checksums *bool
	// Settings are extra server settings, name to plain value (no
	// quoting: {"archive_command": "cp %p /archive/%f"}). Start appends
	// them to postgresql.conf, quoted, after the harness's own lines (so
	// they win); StartOn passes them on the postgres command line
	// (-c name=value), leaving the data directory's configuration files
	// untouched.
	Settings map[string]string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one (and picks
	// again if another process takes it before the server binds).
	Port int
	// Major is the PostgreSQL major the server runs (0: DefaultMajor;
	// else one of NewerMajors). StartOn ignores it: it runs the major of
	// the data directory's PG_VERSION.
	Major int
}

// Cluster is a PostgreSQL server run by the harness.
type Cluster struct {
	u        osUser
	major    int
	bin      string // server programs of major
	base     string // the harness's folder: socket, log, tablespaces (and data for Start)
	dataDir  string
	sockDir  string
	logFile  string
	port     int
	autoPort bool
	settings []string // "name=value" passed with -c (StartOn)
	conf     []byte   // postgresql.conf as initdb wrote it (Start); nil for StartOn
	nextTS   atomic.Int64
}

// Start creates a new cluster with initdb (-U postgres -A trust, UTF8, C
// locale, --no-sync, data checksums unless opts say otherwise), configures
// it for replication tests and starts it with pg_ctl -w. The server is
// stopped and its folders removed when the test ends.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c := newCluster(t, opts.Major, opts)
	c.setDataDir(t, filepath.Join(c.base, "data"))
	if err := mkdirPostgres(c.u, c.dataDir, 0o700); err != nil {
		t.Fatalf("pgtest: create %s: %v", c.dataDir, err)
	}
	args := []string{"-D", c.dataDir, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"}
	if opts.Checksums == nil || *opts.Checksums {
		args = append(args, "--data-checksums")
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if out, err := run(RunAsPostgres(ctx, c.server("initdb"), args...)); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	conf, err := os.ReadFile(filepath.Join(c.dataDir, "postgresql.conf"))
	if err != nil {
		t.Fatalf("pgtest: read postgresql.conf: %v", err)
	}
	c.conf = conf
	hba := filepath.Join(c.dataDir, "pg_hba.conf")
	f, err := os.OpenFile(hba, os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		_, err = f.WriteString("\n# pgtest\nhost replication all 127.0.0.1/32 trust\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatalf("pgtest: add a replication line to %s: %v", hba, err)
	}
	c.startFirst(t, opts)
	return c
}

// StartOn starts PostgreSQL on an existing data directory, e.g. one a
// restore wrote, with the server programs of its PG_VERSION. It gives the directory (and the targets of its pg_wal and
// pg_tblspc symbolic links) to postgres, sets its mode to 0700, removes a
// stale postmaster.pid and starts the server with pg_ctl -w (waiting up to
// 120 s, as recovery may replay WAL). The port, socket folder and
// listen_addresses are passed on the command line, so the directory's
// configuration files are not changed. Every parent of dataDir must be
// enterable by postgres: create restore targets with TempDir.
//
// When the test ends the server is stopped; dataDir itself is left to its
// creator.
func StartOn(t testing.TB, dataDir string, opts Options) *Cluster {
	t.Helper()
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	v, err := os.ReadFile(filepath.Join(dir, "PG_VERSION"))
	if err != nil {
		t.Fatalf("pgtest: %s is not a PostgreSQL data directory: %v", dir, err)
	}
	major, err := strconv.Atoi(strings.TrimSpace(string(v)))
	if err != nil {
		t.Fatalf("pgtest: %s/PG_VERSION: %q is not a major version", dir, v)
	}
	c := newCluster(t, major, opts)
	c.setDataDir(t, dir)
	if err := checkTraversable(c.u, dir); err != nil {
		t.Fatalf("pgtest: start on %s: %v (create it under pgtest.TempDir, not t.TempDir)", dir, err)
	}
	if err := chownDataDir(c.u, dir); err != nil {
		t.Fatalf("pgtest: give %s to postgres: %v", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatalf("pgtest: chmod %s: %v", dir, err)
	}
	if err := os.Remove(filepath.Join(dir, "postmaster.pid")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("pgtest: remove stale postmaster.pid: %v", err)
	}
	for _, k := range sortedKeys(opts.Settings) {
		c.settings = append(c.settings, k+"="+opts.Settings[k])
	}
	c.startFirst(t, opts)
	return c
}

// newCluster makes the harness's folders and registers the cleanup that
// stops the server.
func newCluster(t testing.TB, major int, opts Options) *Cluster {
	t.Helper()
	if major == 0 {
		major = DefaultMajor
	}
	u := mustPostgres(t, major)
	c := &Cluster{u: u, major: major, bin: ServerBinDir(major), base: newBase(t, u), port: opts.Port, autoPort: opts.Port == 0}
	c.sockDir = filepath.Join(c.base, "sock")
	logDir := filepath.Join(c.base, "log")
	c.logFile = filepath.Join(logDir, "postgres.log")
	for _, d := range []string{c.sockDir, logDir} {
		if err := mkdirPostgres(u, d, 0o700); err != nil {
			t.Fatalf("pgtest: create %s: %v", d, err)
		}
	}
	// Registered after newBase's removal, so it runs before it.
	t.Cleanup(func() { c.cleanup(t) })
	return c
}

// setDataDir records the data directory, also in the base folder for
// reap.
func (c *Cluster) setDataDir(t testing.TB, dir string) {
	t.Helper()
	c.dataDir = dir
	if err := os.WriteFile(filepath.Join(c.base, dataDirFile), []byte(dir), 0o644); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

func (c *Cluster) cleanup(t testing.TB) {
	if _, err := os.Stat(c.logFile); err == nil && t.Failed() {
		t.Logf("pgtest: last %d lines of the server log %s:\n%s", logTailLines, c.logFile, c.logTail())
	}
	if c.dataDir == "" || !c.running() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if out, err := run(RunAsPostgres(ctx, c.server("pg_ctl"), "stop", "-D", c.dataDir, "-m", "immediate", "-w")); err != nil {
		t.Errorf("pgtest: stop the server at the end of the test: %v\n%s", err, out)
	}
}

// startFirst starts the server for the first time, picking another port if
// a free port was taken before the server bound it.
func (c *Cluster) startFirst(t testing.TB, opts Options) {
	t.Helper()
	for try := 1; ; try++ {
		if c.autoPort {
			p, err := freePort()
			if err != nil {
				t.Fatalf("pgtest: find a free port: %v", err)
			}
			c.port = p
		}
		if c.conf != nil {
			if err := c.writeConf(opts.Settings); err != nil {
				t.Fatalf("pgtest: write postgresql.conf: %v", err)
			}
		}
		newLog, err := c.start()
		if err == nil {
			return
		}
		if c.autoPort && try < 5 && portTaken(newLog) {
			continue
		}
		t.Fatalf("pgtest: start PostgreSQL on %s (port %d): %v\nlast %d lines of %s:\n%s",
			c.dataDir, c.port, err, logTailLines, c.logFile, c.logTail())
	}
}

func portTaken(log string) bool {
	return strings.Contains(log, "could not bind") || strings.Contains(log, "Address already in use")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeConf writes postgresql.conf: initdb's file, then the harness's
// settings, then opts.Settings.
func (c *Cluster) writeConf(settings map[string]string) error {
	var b strings.Builder
	b.Write(c.conf)
	fmt.Fprintf(&b, "\n# pgtest\n")
	for _, kv := range [][2]string{
		{"listen_addresses", "'127.0.0.1'"},
		{"port", strconv.Itoa(c.port)},
		{"unix_socket_directories", quoteConf(c.sockDir)},
		{"wal_level", "replica"},
		{"max_wal_senders", "10"},
		{"max_replication_slots", "10"},
		{"fsync", "on"},
		{"logging_collector", "off"},
	} {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
	}
	for _, k := range sortedKeys(settings) {
		fmt.Fprintf(&b, "%s = %s\n", k, quoteConf(settings[k]))
	}
	return os.WriteFile(filepath.Join(c.dataDir, "postgresql.conf"), []byte(b.String()), 0o600)
}

// start runs pg_ctl start -w. On failure it returns what the server logged
// during the attempt.
func (c *Cluster) start() (string, error) {
	off := int64(0)
	if fi, err := os.Stat(c.logFile); err == nil {
		off = fi.Size()
	}
	// pg_ctl runs postgres through /bin/sh, so -o is shell-quoted.
	o := []string{"-p", strconv.Itoa(c.port), "-k", shellQuote(c.sockDir), "-c", "listen_addresses=127.0.0.1"}
	for _, s := range c.settings {
		o = append(o, "-c", shellQuote(s))
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout+10*time.Second)
	defer cancel()
	out, err := run(RunAsPostgres(ctx, c.server("pg_ctl"), "start", "-D", c.dataDir, "-l", c.logFile,
		"-w", "-t", strconv.Itoa(int(startTimeout/time.Second)), "-o", strings.Join(o, " ")))
	if err == nil {
		return "", nil
	}
	var newLog string
	if b, rerr := os.ReadFile(c.logFile); rerr == nil && int64(len(b)) >= off {
		newLog = string(b[off:])
	}
	return newLog, fmt.Errorf("%w\n%s", err, strings.TrimSpace(out))
}

// Start starts the stopped server again, on the same port and folders.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	if _, err := c.start(); err != nil {
		t.Fatalf("pgtest: restart PostgreSQL on %s (port %d): %v\nlast %d lines of %s:\n%s",
			c.dataDir, c.port, err, logTailLines, c.logFile, c.logTail())
	}
}

// Stop stops the server with pg_ctl stop -m mode -w; mode is "smart",
// "fast" (clean shutdown) or "immediate" (like a crash: the next start
// runs crash recovery).
func (c *Cluster) Stop(t testing.TB, mode string) {
	t.Helper()
	switch mode {
	case "smart", "fast", "immediate":
	default:
		t.Fatalf("pgtest: stop mode %q: want smart, fast or immediate", mode)
	}
	c.pgCtl(t, "stop", "stop", "-m", mode, "-t", strconv.Itoa(int(stopTimeout/time.Second)))
}

// Restart stops the server cleanly ("fast") and starts it again.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	c.Stop(t, "fast")
	c.Start(t)
}

// Promote ends recovery on a standby (pg_ctl promote -w) and returns when
// it accepts writes.
func (c *Cluster) Promote(t testing.TB) {
	t.Helper()
	c.pgCtl(t, "promote", "promote", "-t", strconv.Itoa(int(readyTimeout/time.Second)))
}

func (c *Cluster) pgCtl(t testing.TB, what string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout+10*time.Second)
	defer cancel()
	args = append([]string{args[0], "-D", c.dataDir, "-w"}, args[1:]...)
	if out, err := run(RunAsPostgres(ctx, c.server("pg_ctl"), args...)); err != nil {
		t.Fatalf("pgtest: %s PostgreSQL on %s (port %d): %v\n%s\nlast %d lines of %s:\n%s",
			what, c.dataDir, c.port, err, strings.TrimSpace(out), logTailLines, c.logFile, c.logTail())
	}
}

// running reports whether a postmaster runs on the data directory, by its
// postmaster.pid.
func (c *Cluster) running() bool {
	b, err := os.ReadFile(filepath.Join(c.dataDir, "postmaster.pid"))
	if err != nil {
		return false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

// DataDir is the data directory.
func (c *Cluster) DataDir() string { return c.dataDir }

// SocketDir is the folder of the server's unix socket.
func (c *Cluster) SocketDir() string { return c.sockDir }

// Port is the server's TCP port on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// BinDir is the folder of the server's programs (initdb, pg_ctl,
// postgres) of its major; client programs are in the package's BinDir.
func (c *Cluster) BinDir() string { return c.bin }

// Major is the server's major version.
func (c *Cluster) Major() int { return c.major }

// server is the path of one of the server's programs.
func (c *Cluster) server(name string) string { return filepath.Join(c.bin, name) }

// LogFile is the server's log (pg_ctl -l), appended to across restarts.
func (c *Cluster) LogFile() string { return c.logFile }

// TablespaceDir returns a new, empty folder owned by postgres for CREATE
// TABLESPACE ... LOCATION, removed when the test ends.
func (c *Cluster) TablespaceDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(c.base, fmt.Sprintf("tblspc%d", c.nextTS.Add(1)))
	if err := mkdirPostgres(c.u, dir, 0o700); err != nil {
		t.Fatalf("pgtest: create tablespace folder: %v", err)
	}
	return dir
}

// ConnString is a keyword/value connection string for database dbname,
// usable by pgx and by libpq programs (psql -d, pg_basebackup -d):
// host=127.0.0.1 port=N user=postgres dbname=X sslmode=disable.
func (c *Cluster) ConnString(dbname string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", c.port, pg.QuoteConnValue(dbname))
}

// ReplicationConnString is a connection string for a physical replication
// connection (replication=true: IDENTIFY_SYSTEM, BASE_BACKUP,
// START_REPLICATION PHYSICAL), for pgconn.Connect. libpq programs such as
// pg_receivewal add replication=true themselves.
func (c *Cluster) ReplicationConnString() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=disable replication=true", c.port)
}

// logTail returns the last lines of the server log.
func (c *Cluster) logTail() string {
	b, err := os.ReadFile(c.logFile)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return strings.Join(lines, "\n")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// quoteConf quotes a postgresql.conf string value.
func quoteConf(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

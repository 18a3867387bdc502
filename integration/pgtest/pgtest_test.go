package pgtest_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgvault/pgvault/integration/pgtest"
)

func TestCluster(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})

	// Configuration.
	for setting, want := range map[string]string{
		"server_version_num":      "15",
		"data_checksums":          "on",
		"wal_level":               "replica",
		"max_wal_senders":         "10",
		"max_replication_slots":   "10",
		"fsync":                   "on",
		"listen_addresses":        "127.0.0.1",
		"port":                    strconv.Itoa(c.Port()),
		"unix_socket_directories": c.SocketDir(),
		"data_directory":          c.DataDir(),
	} {
		got := c.QueryString(t, "SELECT current_setting($1)", setting)
		if setting == "server_version_num" {
			got = got[:2]
		}
		if got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	assertPostgresOwned(t, c.DataDir(), 0o700)
	assertPostgresOwned(t, c.SocketDir(), 0o700)
	if c.BinDir() != pgtest.BinDir {
		t.Errorf("BinDir() = %s", c.BinDir())
	}
	if fi, err := os.Stat(c.LogFile()); err != nil || fi.Size() == 0 {
		t.Errorf("server log %s: %v (empty?)", c.LogFile(), err)
	}

	// SQL helpers.
	c.Exec(t, "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)")
	c.Exec(t, "INSERT INTO t VALUES ($1)", 39)
	if got := c.QueryInt(t, "SELECT sum(x) FROM t WHERE x > $1", 0); got != 42 {
		t.Errorf("sum = %d, want 42", got)
	}
	if got := c.QueryString(t, "SELECT 40 + $1::int", 2); got != "42" {
		t.Errorf("QueryString(int) = %q", got)
	}
	if got := c.QueryString(t, "SELECT true"); got != "t" {
		t.Errorf("QueryString(bool) = %q", got)
	}
	if got := c.QueryString(t, "SELECT 'abc'"); got != "abc" {
		t.Errorf("QueryString(text) = %q", got)
	}
	c.Exec(t, "CREATE DATABASE other")
	conn := c.Conn(t, "other")
	var db string
	if err := conn.QueryRow(context.Background(), "SELECT current_database()").Scan(&db); err != nil || db != "other" {
		t.Errorf("Conn(other): database %q, %v", db, err)
	}
	// ConnString works for libpq programs too (run as root, over TCP).
	out, err := exec.Command(filepath.Join(pgtest.BinDir, "psql"), "-d", c.ConnString("other"), "-Atc", "SELECT current_database()").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "other" {
		t.Errorf("psql -d ConnString: %v: %s", err, out)
	}

	// pgbench.
	c.PgbenchInit(t, 1)
	if n := c.QueryInt(t, "SELECT count(*) FROM pgbench_accounts"); n != 100000 {
		t.Errorf("pgbench_accounts has %d rows, want 100000", n)
	}
	out2 := c.Pgbench(context.Background(), t, "-T", "2", "-c", "2")
	if !strings.Contains(out2, "number of transactions actually processed") {
		t.Errorf("pgbench output:\n%s", out2)
	}
	before := c.QueryInt(t, "SELECT count(*) FROM pgbench_history")
	ctx, cancel := context.WithCancel(context.Background())
	wait := c.PgbenchBackground(ctx, t, "-c", "2")
	eventually(t, 20*time.Second, "background pgbench to make progress", func() bool {
		return c.QueryInt(t, "SELECT count(*) FROM pgbench_history") >= before+100
	})
	cancel()
	wait()

	// Markers.
	c.CreateMarkers(t)
	m1 := c.InsertMarker(t, "one")
	m2 := c.InsertMarker(t, "two")
	if m1.ID != 1 || m2.ID != 2 || m1.Note != "one" {
		t.Errorf("markers %+v %+v", m1, m2)
	}
	if !m1.CommittedAt.Before(m2.CommittedAt) {
		t.Errorf("marker times not increasing: %v, %v", m1.CommittedAt, m2.CommittedAt)
	}
	if mustLSN(t, m1.LSN) >= mustLSN(t, m2.LSN) {
		t.Errorf("marker LSNs not increasing: %s, %s", m1.LSN, m2.LSN)
	}
	if n := c.QueryInt(t, "SELECT count(*) FROM pgvault_markers WHERE id = $1 AND committed_at <= $2", m2.ID, m2.CommittedAt); n != 1 {
		t.Errorf("marker 2's committed_at column is after its CommittedAt")
	}
	if n := c.CountMarkers(t); n != 2 {
		t.Errorf("CountMarkers = %d", n)
	}
	if ids := c.MarkerIDs(t); !slices.Equal(ids, []int64{1, 2}) {
		t.Errorf("MarkerIDs = %v", ids)
	}

	// WAL.
	c.Checkpoint(t)
	lsn := mustLSN(t, c.CurrentLSN(t))
	if lsn < mustLSN(t, m2.LSN) {
		t.Errorf("CurrentLSN %v before marker 2's %s", lsn, m2.LSN)
	}
	seg := c.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_lsn())")
	sw := mustLSN(t, c.SwitchWAL(t))
	if sw < lsn {
		t.Errorf("SwitchWAL %v before %v", sw, lsn)
	}
	c.InsertMarker(t, "next segment")
	if next := c.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_lsn())"); next <= seg {
		t.Errorf("after SwitchWAL still in segment %s (was %s)", next, seg)
	}

	// A physical replication connection.
	sysID := c.SystemIdentifier(t)
	if sysID == 0 {
		t.Error("SystemIdentifier = 0")
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	rconn, err := pgconn.Connect(rctx, c.ReplicationConnString())
	if err != nil {
		t.Fatalf("replication connection: %v", err)
	}
	defer rconn.Close(context.Background())
	ident, err := pglogrepl.IdentifySystem(rctx, rconn)
	if err != nil {
		t.Fatalf("IDENTIFY_SYSTEM: %v", err)
	}
	if ident.SystemID != strconv.FormatUint(sysID, 10) || ident.Timeline != 1 || ident.DBName != "" || ident.XLogPos < sw {
		t.Errorf("IDENTIFY_SYSTEM = %+v; system identifier %d, switched at %v", ident, sysID, sw)
	}
	// A physical walsender runs no SQL (a logical one, replication=database, would).
	if _, err := rconn.Exec(rctx, "SELECT 1").ReadAll(); err == nil || !strings.Contains(err.Error(), "physical replication") {
		t.Errorf("SQL on the replication connection: %v; want a physical walsender's refusal", err)
	}

	// A tablespace.
	ts := c.TablespaceDir(t)
	assertPostgresOwned(t, ts, 0o700)
	c.Exec(t, fmt.Sprintf("CREATE TABLESPACE ts LOCATION '%s'", ts))
	c.Exec(t, "CREATE TABLE in_ts (x int) TABLESPACE ts; INSERT INTO in_ts VALUES (7)")

	// Restart, then crash and recover.
	c.Restart(t)
	if n := c.CountMarkers(t); n != 3 {
		t.Errorf("after restart: %d markers", n)
	}
	c.InsertMarker(t, "before crash")
	c.Stop(t, "immediate")
	// Stopped: RunAsPostgres runs server programs as postgres.
	ctrl, err := pgtest.RunAsPostgres(context.Background(), "pg_controldata", "-D", c.DataDir()).CombinedOutput()
	if err != nil || !strings.Contains(string(ctrl), strconv.FormatUint(sysID, 10)) {
		t.Errorf("pg_controldata: %v\n%s", err, ctrl)
	}
	c.Start(t)
	if n := c.CountMarkers(t); n != 4 {
		t.Errorf("after crash recovery: %d markers, want 4", n)
	}
	if n := c.QueryInt(t, "SELECT x FROM in_ts"); n != 7 {
		t.Errorf("tablespace table: %d", n)
	}
	if log, _ := os.ReadFile(c.LogFile()); !strings.Contains(string(log), "automatic recovery in progress") {
		t.Errorf("the server log shows no crash recovery")
	}
	c.Stop(t, "fast")
	if out, err := pgtest.RunAsPostgres(context.Background(), "pg_checksums", "--check", "-D", c.DataDir()).CombinedOutput(); err != nil {
		t.Errorf("pg_checksums --check: %v\n%s", err, out)
	}
}

func TestStartOn(t *testing.T) {
	a := pgtest.Start(t, pgtest.Options{})
	a.CreateMarkers(t)
	for i := range 3 {
		a.InsertMarker(t, strconv.Itoa(i))
	}
	sysID := a.SystemIdentifier(t)
	a.Stop(t, "fast")
	copyDir := pgtest.TempDir(t)
	standbyDir := pgtest.TempDir(t)
	for _, dst := range []string{copyDir, standbyDir} {
		// cp -a as root: the copy is root's until StartOn gives it to postgres.
		if out, err := exec.Command("cp", "-a", a.DataDir()+"/.", dst).CombinedOutput(); err != nil {
			t.Fatalf("cp -a: %v\n%s", err, out)
		}
	}
	a.Start(t)

	// A copy runs beside the original: own port and socket, same system.
	b := pgtest.StartOn(t, copyDir, pgtest.Options{Settings: map[string]string{"cluster_name": "pgtest copy's"}})
	if b.Port() == a.Port() || b.SocketDir() == a.SocketDir() {
		t.Fatalf("copy shares port %d or socket folder %s with the original", b.Port(), b.SocketDir())
	}
	assertPostgresOwned(t, copyDir, 0o700)
	if got := b.QueryString(t, "SHOW cluster_name"); got != "pgtest copy's" {
		t.Errorf("cluster_name = %q", got)
	}
	if got := b.QueryString(t, "SHOW port"); got != strconv.Itoa(b.Port()) {
		t.Errorf("copy listens on %s, want %d", got, b.Port())
	}
	conf, _ := os.ReadFile(filepath.Join(copyDir, "postgresql.conf"))
	if !strings.Contains(string(conf), fmt.Sprintf("port = %d\n", a.Port())) {
		t.Error("StartOn changed postgresql.conf")
	}
	if b.SystemIdentifier(t) != sysID || b.CountMarkers(t) != 3 {
		t.Errorf("copy: system %d, %d markers; want %d, 3", b.SystemIdentifier(t), b.CountMarkers(t), sysID)
	}
	b.InsertMarker(t, "copy only")
	if a.CountMarkers(t) != 3 || b.CountMarkers(t) != 4 {
		t.Errorf("original has %d markers, copy %d; want 3, 4", a.CountMarkers(t), b.CountMarkers(t))
	}
	b.Restart(t)
	b.WaitReady(t)

	// A standby (no primary): starts in recovery, promotes.
	if err := os.WriteFile(filepath.Join(standbyDir, "standby.signal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := pgtest.StartOn(t, standbyDir, pgtest.Options{})
	s.WaitReady(t)
	if got := s.QueryString(t, "SELECT pg_is_in_recovery()"); got != "t" {
		t.Fatalf("standby not in recovery: %s", got)
	}
	s.Promote(t)
	s.WaitRecoveryDone(t)
	s.InsertMarker(t, "promoted")
	if n := s.CountMarkers(t); n != 4 {
		t.Errorf("promoted standby: %d markers", n)
	}
	if tli := s.QueryInt(t, "SELECT timeline_id FROM pg_control_checkpoint()"); tli != 2 {
		// The promotion checkpoint may still be running: check the WAL file name instead.
		if seg := s.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_lsn())"); !strings.HasPrefix(seg, "00000002") {
			t.Errorf("promoted standby on WAL %s, want timeline 2", seg)
		}
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	off := false
	c := pgtest.Start(t, pgtest.Options{
		Checksums: &off,
		Port:      port,
		Settings:  map[string]string{"work_mem": "3MB", "max_wal_senders": "5"},
	})
	if c.Port() != port {
		t.Errorf("Port() = %d, want %d", c.Port(), port)
	}
	for setting, want := range map[string]string{
		"data_checksums":  "off",
		"work_mem":        "3MB",
		"max_wal_senders": "5", // Settings override the harness's own
		"port":            strconv.Itoa(port),
	} {
		if got := c.QueryString(t, "SELECT current_setting($1)", setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
}

// Clusters started at the same time get their own ports and folders.
func TestConcurrentClusters(t *testing.T) {
	t.Parallel()
	for i := range 2 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			c := pgtest.Start(t, pgtest.Options{})
			c.CreateMarkers(t)
			c.InsertMarker(t, "x")
			if n := c.CountMarkers(t); n != 1 {
				t.Errorf("%d markers", n)
			}
		})
	}
}

func TestStartFailureShowsLog(t *testing.T) {
	t.Parallel()
	msg := fatal(t, func(tb testing.TB) {
		pgtest.Start(tb, pgtest.Options{Settings: map[string]string{"shared_buffers": "lots"}})
	})
	for _, want := range []string{"start PostgreSQL", "last 30 lines", `invalid value for parameter "shared_buffers"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("failure message lacks %q:\n%s", want, msg)
		}
	}
}

func TestStartPortTaken(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	msg := fatal(t, func(tb testing.TB) { pgtest.Start(tb, pgtest.Options{Port: port}) })
	if !strings.Contains(msg, "could not bind") {
		t.Errorf("failure message does not say the port is taken:\n%s", msg)
	}
}

// A test process killed without running its cleanups leaves a server
// behind; the next harness call stops it and removes its folders.
func TestReapLeftovers(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLeakHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PGTEST_LEAK_HELPER=1")
	out, _ := cmd.Output() // the helper kills itself
	var dataDir string
	var pid int
	if _, err := fmt.Sscanf(string(out), "leaked %s %d", &dataDir, &pid); err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	if !alive(pid) {
		t.Fatalf("leaked server (pid %d) is not running", pid)
	}
	pgtest.TempDir(t) // reaps
	// pg_ctl stop -w returns once postmaster.pid is gone, a moment before
	// the process has exited.
	eventually(t, 10*time.Second, fmt.Sprintf("the leaked server (pid %d) to exit", pid), func() bool { return !alive(pid) })
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("leaked data directory %s: %v", dataDir, err)
	}
}

// TestLeakHelper is TestReapLeftovers' child process: it starts a cluster
// and dies as if killed by go test -timeout.
func TestLeakHelper(t *testing.T) {
	if os.Getenv("PGTEST_LEAK_HELPER") == "" {
		return
	}
	c := pgtest.Start(t, pgtest.Options{})
	b, err := os.ReadFile(filepath.Join(c.DataDir(), "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _, _ := strings.Cut(string(b), "\n")
	fmt.Printf("leaked %s %s\n", c.DataDir(), pid)
	os.Stdout.Sync()
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
}

func TestStartOnErrors(t *testing.T) {
	t.Parallel()
	if msg := fatal(t, func(tb testing.TB) { pgtest.StartOn(tb, pgtest.TempDir(t), pgtest.Options{}) }); !strings.Contains(msg, "not a PostgreSQL data directory") {
		t.Errorf("empty folder: %s", msg)
	}
	// t.TempDir is root's with mode 0700: postgres cannot enter it.
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte("15\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if msg := fatal(t, func(tb testing.TB) { pgtest.StartOn(tb, dir, pgtest.Options{}) }); !strings.Contains(msg, "cannot be entered by the postgres OS user") {
		t.Errorf("untraversable parent: %s", msg)
	}
}

// fatal runs f with a testing.TB whose Fatal ends f (not the test) and
// returns the message. Cleanups go to t.
func fatal(t *testing.T, f func(testing.TB)) string {
	t.Helper()
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	if r.msg == "" {
		t.Fatal("expected a fatal error, got none")
	}
	return r.msg
}

type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatal(args ...any) {
	r.msg = fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *recorder) FailNow() {
	r.msg = "FailNow"
	runtime.Goexit()
}

func mustLSN(t *testing.T, s string) pglogrepl.LSN {
	t.Helper()
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatalf("LSN %q: %v", s, err)
	}
	return lsn
}

func assertPostgresOwned(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if uid := strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Uid)); uid != u.Uid || fi.Mode().Perm() != mode {
		t.Errorf("%s: owner uid %s mode %v; want postgres (%s), %v", dir, uid, fi.Mode().Perm(), u.Uid, mode)
	}
}

// eventually looks at cond at once and then every 20 ms, and fails the
// test if it does not hold within timeout. (The integration package's
// waitFor, which this package's tests cannot import.)
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("waiting for %s: not so after %v", what, timeout)
		}
	}
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || !strings.HasPrefix(string(b[i+1:]), " Z")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

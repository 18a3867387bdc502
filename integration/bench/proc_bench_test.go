//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// ---- ledger: what a killed run leaves behind, for the next run to stop ----

// ledgerDir holds one file per running benchmark process (named by its
// pid), one line per resource: "server DATADIR", "pgid PID COMM",
// "mount DIR", "dir DIR" (a temporary folder to remove).
func ledgerDir() string { return filepath.Join(os.TempDir(), "pgvault-bench-ledger") }

type ledger struct {
	mu   sync.Mutex
	path string
}

func openLedger() (*ledger, error) {
	if err := os.MkdirAll(ledgerDir(), 0o755); err != nil {
		return nil, err
	}
	return &ledger{path: filepath.Join(ledgerDir(), strconv.Itoa(os.Getpid()))}, nil
}

func (l *ledger) add(kind, value string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	fmt.Fprintf(f, "%s %s\n", kind, value)
	f.Close()
}

func (l *ledger) remove() { os.Remove(l.path) }

// reapLedgers stops what benchmark processes that no longer exist left
// running: PostgreSQL servers on data directories the harness does not
// know (restored copies, instant mounts), background process groups
// (mounts, streamers, pgbench) and mounts. It returns what it did.
func reapLedgers() []string {
	var did []string
	files, _ := filepath.Glob(filepath.Join(ledgerDir(), "*"))
	for _, file := range files {
		pid, err := strconv.Atoi(filepath.Base(file))
		if err != nil || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		data, _ := os.ReadFile(file)
		var servers, groups, mounts, dirs []string
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			kind, value, _ := strings.Cut(sc.Text(), " ")
			switch kind {
			case "server":
				servers = append(servers, value)
			case "pgid":
				groups = append(groups, value)
			case "mount":
				mounts = append(mounts, value)
			case "dir":
				dirs = append(dirs, value)
			}
		}
		for _, dir := range servers {
			if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				if pgtest.RunAsPostgres(ctx, "pg_ctl", "stop", "-D", dir, "-m", "immediate", "-w").Run() == nil {
					did = append(did, "stopped PostgreSQL on "+dir)
				}
				cancel()
			}
		}
		for _, g := range groups {
			f := strings.Fields(g)
			if len(f) != 2 {
				continue
			}
			pgid, err := strconv.Atoi(f[0])
			if err != nil || pgid <= 1 {
				continue
			}
			// Only the group we started: its leader must still be the
			// program we recorded (pids are reused).
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pgid))
			if strings.TrimSpace(string(comm)) != f[1] {
				continue
			}
			syscall.Kill(-pgid, syscall.SIGTERM)
			waitUntil(nil, 100*time.Millisecond, 5*time.Second, func() bool { return !processAlive(pgid) })
			syscall.Kill(-pgid, syscall.SIGKILL)
			did = append(did, fmt.Sprintf("stopped process group %d (%s)", pgid, f[1]))
		}
		for _, m := range mounts {
			if isMounted(m) {
				exec.Command("umount", "-l", m).Run()
				did = append(did, "unmounted "+m)
			}
		}
		for _, d := range dirs {
			// Only the temporary folders we made (never a mount point).
			if !strings.HasPrefix(d, os.TempDir()+"/") || isMounted(d) {
				continue
			}
			if _, err := os.Stat(d); err == nil && os.RemoveAll(d) == nil {
				did = append(did, "removed "+d)
			}
		}
		os.Remove(file)
	}
	return did
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// isMounted reports whether dir is a mount point (/proc/self/mountinfo).
func isMounted(dir string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// ---- running and measuring commands ----

// usage is what one command cost.
type usage struct {
	Wall      time.Duration
	User, Sys time.Duration
	MaxRSSMB  float64
	Stdout    string
	Stderr    string
}

func (u usage) CPU() float64 { return (u.User + u.Sys).Seconds() }

// rootCmd runs a program as root, without the caller's PG* and PGVAULT_*
// variables.
func rootCmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = cleanEnv()
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// pgCmd runs a program as the postgres OS user (a name without a slash
// is a PostgreSQL program).
func pgCmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := pgtest.RunAsPostgres(ctx, name, args...)
	var env []string
	for _, kv := range cmd.Env {
		if !strings.HasPrefix(kv, "PGVAULT_") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	return cmd
}

// resticBin is the restic the benchmarks run: $PGVAULT_RESTIC (.ci/bench
// builds restic 0.18.1 there), else the one on PATH.
func resticBin() string {
	if p := os.Getenv("PGVAULT_RESTIC"); p != "" {
		return p
	}
	return "restic"
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "RESTIC_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// measure runs cmd to completion and returns its wall time and the rusage
// of it and every descendant it waited for.
func measure(cmd *exec.Cmd) (usage, error) {
	var out, errb bytes.Buffer
	if cmd.Stdout == nil {
		cmd.Stdout = &out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = &errb
	}
	start := time.Now()
	err := cmd.Run()
	u := usage{Wall: time.Since(start), Stdout: out.String(), Stderr: errb.String()}
	if ps := cmd.ProcessState; ps != nil {
		u.User, u.Sys = ps.UserTime(), ps.SystemTime()
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			u.MaxRSSMB = float64(ru.Maxrss) * 1024 / 1e6
		}
	}
	if err != nil {
		return u, fmt.Errorf("%s: %w\n%s", shortCmd(cmd), err, tail(u.Stderr+u.Stdout, 15))
	}
	return u, nil
}

func shortCmd(cmd *exec.Cmd) string {
	s := strings.Join(cmd.Args, " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// bgProc is a background process in its own process group.
type bgProc struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{}
	err    error
	start  time.Time
	wall   time.Duration
	stopMu sync.Mutex
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startBG starts cmd in its own process group, records it in the ledger
// and stops it (SIGTERM, then SIGKILL) when the test ends.
func (b *bench) startBG(cmd *exec.Cmd) (*bgProc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	p := &bgProc{cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	p.start = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", shortCmd(cmd), err)
	}
	b.led.add("pgid", fmt.Sprintf("%d %s", cmd.Process.Pid, commOf(cmd.Path)))
	go func() {
		p.err = cmd.Wait()
		p.wall = time.Since(p.start)
		close(p.done)
	}()
	b.t.Cleanup(func() { p.stop(syscall.SIGTERM, 30*time.Second) })
	return p, nil
}

// commOf is what /proc/PID/comm shows for a program (15 characters).
func commOf(path string) string {
	c := filepath.Base(path)
	if len(c) > 15 {
		c = c[:15]
	}
	return c
}

func (p *bgProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop signals the process group and waits up to grace for the leader to
// exit, then kills the group. It returns the leader's usage.
func (p *bgProc) stop(sig syscall.Signal, grace time.Duration) usage {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if !p.exited() {
		syscall.Kill(-p.cmd.Process.Pid, sig)
		select {
		case <-p.done:
		case <-time.After(grace):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	// Whatever else is left in the group.
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	u := usage{Wall: p.wall, Stdout: p.out.String()}
	if ps := p.cmd.ProcessState; ps != nil {
		u.User, u.Sys = ps.UserTime(), ps.SystemTime()
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			u.MaxRSSMB = float64(ru.Maxrss) * 1024 / 1e6
		}
	}
	return u
}

// ---- the server's CPU ----

// procTimes reads /proc and returns, per pid, its parent and its CPU
// ticks (utime+stime+cutime+cstime: exited children it reaped count too).
func procTimes() (map[int]int, map[int]int64) {
	parent, ticks := map[int]int{}, map[int]int64{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		// f[0] is field 3 (state): ppid is field 4, utime..cstime 14..17.
		if len(f) < 15 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		var sum int64
		for _, k := range []int{11, 12, 13, 14} {
			v, _ := strconv.ParseInt(f[k], 10, 64)
			sum += v
		}
		parent[pid], ticks[pid] = ppid, sum
	}
	return parent, ticks
}

// serverCPU returns the CPU seconds used so far by the postmaster of
// dataDir and all its descendants, live or reaped.
func serverCPU(dataDir string) float64 {
	root := postmasterPID(dataDir)
	if root == 0 {
		return 0
	}
	parent, ticks := procTimes()
	children := map[int][]int{}
	for pid, pp := range parent {
		children[pp] = append(children[pp], pid)
	}
	var total int64
	var walk func(int)
	walk = func(pid int) {
		total += ticks[pid]
		for _, c := range children[pid] {
			walk(c)
		}
	}
	walk(root)
	return float64(total) / 100 // USER_HZ is 100 on Linux
}

// ---- caches, sizes, SQL ----

// dropCaches writes dirty pages and drops the page cache, dentries and
// inodes, so the next read comes from disk.
func dropCaches() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}

// treeMB returns the apparent size of every regular file below dir, MB.
func treeMB(dir string) float64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return float64(n) / 1e6
}

// readTree reads every regular file below dir sequentially, as cat would,
// with 1 MiB read calls, and returns the bytes read.
func readTree(dir string) (int64, error) {
	buf := make([]byte, 1<<20)
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		// A plain read loop: io.CopyBuffer into io.Discard would ignore
		// buf (*os.File has WriteTo, io.Discard ReadFrom) and read 8 KiB
		// at a time.
		for {
			m, err := f.Read(buf)
			n += int64(m)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read %s: %w", p, err)
			}
		}
	})
	return n, err
}

func sqlConn(ctx context.Context, port int) (*pgx.Conn, error) {
	return pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable connect_timeout=5", port))
}

// sqlExec runs statements on the server at port.
func sqlExec(port int, timeout time.Duration, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := sqlConn(ctx, port)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	if err != nil {
		return fmt.Errorf("%.60s: %w", sql, err)
	}
	return nil
}

// sqlString runs a one-value query and returns the value as text.
func sqlString(port int, sql string, args ...any) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := sqlConn(ctx, port)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var s string
	args = append([]any{pgx.QueryResultFormats{pgx.TextFormatCode}}, args...)
	if err := conn.QueryRow(ctx, sql, args...).Scan(&s); err != nil {
		return "", fmt.Errorf("%.60s: %w", sql, err)
	}
	return s, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ---- PostgreSQL on a restored or mounted data directory ----

// server is PostgreSQL started by the benchmark on a data directory that
// a restore or a mount produced (not through pgtest.StartOn, whose chown
// of every file would add FUSE round trips to the instant mount's time).
type server struct {
	dir  string
	port int
}

// startServer starts PostgreSQL on dir (owned by postgres, mode 0700,
// without a live postmaster.pid) with archiving off and waits until the
// first query (b.query: SELECT 1 unless set) answers. It returns the time
// from pg_ctl start to the answer. A wrong answer is an error at once.
//
// pg_ctl runs with --no-wait and the benchmark itself tries the query
// every 10 ms: pg_ctl's own wait loop looks at postmaster.pid only every
// 100 ms, which would round every start up to the next tenth of a second.
func (b *bench) startServer(dir string) (*server, time.Duration, error) {
	port, err := freePort()
	if err != nil {
		return nil, 0, err
	}
	aux := pgtest.TempDir(b.t)
	logFile := filepath.Join(aux, "postgres.log")
	b.led.add("server", dir)
	s := &server{dir: dir, port: port}
	b.t.Cleanup(func() { s.stop() })
	o := fmt.Sprintf("-p %d -k '%s' -c listen_addresses=127.0.0.1 -c archive_mode=off", port, aux)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := pgCmd(ctx, "pg_ctl", "start", "--no-wait", "-D", dir, "-l", logFile, "-o", o)
	query, want := b.query()
	b.recordLine("start PostgreSQL on the restored copy or the mount point (as postgres), then try `"+query+"` every 10 ms (pgx, a new connection each time) until it answers",
		strings.ReplaceAll(strings.Join(quoteArgs(cmd.Args), " "), fmt.Sprintf("-p %d ", port), "-p $PORT "))
	failed := func(err error) error {
		s.stop()
		log, _ := os.ReadFile(logFile)
		var fatal []string
		for _, line := range strings.Split(string(log), "\n") {
			if strings.Contains(line, "the database system is starting up") || strings.Contains(line, "the database system is not yet accepting connections") {
				continue // the benchmark's own early tries
			}
			if strings.Contains(line, "FATAL:") || strings.Contains(line, "PANIC:") || strings.Contains(line, "cannot ") {
				if _, msg, ok := strings.Cut(line, "] "); ok {
					line = msg
				}
				fatal = append(fatal, strings.TrimSpace(line))
			}
		}
		if len(fatal) == 0 {
			fatal = []string{firstLine(err)}
		}
		return fmt.Errorf("PostgreSQL did not start on %s: %s", dir, strings.Join(fatal, "; "))
	}
	if _, err := measure(cmd); err != nil {
		return nil, 0, failed(err)
	}
	postmaster := 0
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for ; ; <-tick.C {
		v, err := sqlString(port, query)
		if err == nil {
			if v != want {
				s.stop()
				return nil, 0, fmt.Errorf("%s on %s answered %q, want %q", query, dir, v, want)
			}
			break
		}
		waited := time.Since(start)
		if postmaster == 0 {
			postmaster = postmasterPID(dir)
		}
		switch {
		case postmaster != 0 && syscall.Kill(postmaster, 0) != nil:
			return nil, 0, failed(fmt.Errorf("the postmaster exited: %w", err))
		case postmaster == 0 && waited > time.Minute:
			return nil, 0, failed(fmt.Errorf("no postmaster.pid after %v: %w", waited, err))
		case waited > 10*time.Minute:
			return nil, 0, failed(err)
		}
	}
	return s, time.Since(start), nil
}

// postmasterPID is the PID in dir/postmaster.pid, or 0.
func postmasterPID(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

func (s *server) stop() {
	if _, err := os.Stat(filepath.Join(s.dir, "postmaster.pid")); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pgCmd(ctx, "pg_ctl", "stop", "-D", s.dir, "-m", "immediate", "-w").Run()
}

// waitArchiveIdle waits until the cluster has no segment waiting to be
// archived (pg_wal/archive_status/*.ready).
func waitArchiveIdle(dataDir string, timeout time.Duration) error {
	var ready []string
	if waitUntil(nil, 100*time.Millisecond, timeout, func() bool {
		ready, _ = filepath.Glob(filepath.Join(dataDir, "pg_wal", "archive_status", "*.ready"))
		return len(ready) == 0
	}) != nil {
		return fmt.Errorf("%d WAL segments still waiting to be archived after %v (first: %s)", len(ready), timeout, filepath.Base(ready[0]))
	}
	return nil
}

// ownByPostgres gives path to the postgres OS user.
func ownByPostgres(t testing.TB, paths ...string) {
	t.Helper()
	for _, p := range paths {
		cmd := exec.Command("chown", "-R", "postgres:postgres", p)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("chown %s: %v\n%s", p, err, out)
		}
	}
}

func firstLine(err error) string {
	line, _, _ := strings.Cut(err.Error(), "\n")
	return line
}

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/fs/verify"
	"github.com/pgvault/pgvault/internal/service"
)

type demoOptions struct {
	keep  bool
	scale int
	pgBin string
}

func demoCommand() *cli.Command {
	var o demoOptions
	return &cli.Command{
		Name:  "demo",
		Usage: "run the main job end to end on a throwaway PostgreSQL (needs root: FUSE and the postgres OS user)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "keep", Destination: &o.keep, Usage: "keep the demo's folders (printed at the end)"},
			&cli.IntFlag{Name: "scale", Destination: &o.scale, Value: 5, Usage: "pgbench `SCALE` of the demo database"},
			&cli.StringFlag{Name: "pg-bin", Destination: &o.pgBin, Usage: "PostgreSQL server programs `DIR` (default: found via pg_config or /usr/lib/postgresql/15/bin)"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			return runDemo(c.Context, e, o)
		},
	}
}

// demo holds the throwaway world: a cluster, a repository, processes.
type demo struct {
	e        *env
	self     string // this pgvault binary
	pgBin    string
	owner    verify.OSUser
	base     string
	data     string
	sock     string
	port     int
	repoEnv  []string
	steps    []demoStep
	cleanups []func()
}

type demoStep struct {
	Step    string  `json:"step"`
	Seconds float64 `json:"seconds"`
	Detail  string  `json:"detail"`
}

func (d *demo) say(step string, start time.Time, format string, args ...any) {
	s := demoStep{Step: step, Seconds: time.Since(start).Seconds(), Detail: fmt.Sprintf(format, args...)}
	d.steps = append(d.steps, s)
	if !d.e.out.json {
		fmt.Fprintf(d.e.out.w, "%-9s %6.2fs  %s\n", s.Step, s.Seconds, s.Detail)
	}
}

// runDemo is the README's main job: a throwaway PostgreSQL, a repository,
// WAL streaming, a base backup, load with marker rows, a mount at a point
// in time with PostgreSQL started on it, and a boot verification.
func runDemo(ctx context.Context, e *env, o demoOptions) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("demo needs root: it mounts FUSE and runs PostgreSQL as the postgres OS user (run `sudo make demo`)")
	}
	d := &demo{e: e}
	if d.self, err = os.Executable(); err != nil {
		return err
	}
	if d.owner, err = verify.LookupUser("postgres"); err != nil {
		return err
	}
	if d.pgBin, err = verify.FindPGBin(o.pgBin, 15); err != nil {
		return err
	}
	if err := pgvaultCheckFUSE(); err != nil {
		return err
	}
	if d.base, err = os.MkdirTemp("", "pgvault-demo-"); err != nil {
		return err
	}
	os.Chmod(d.base, 0o755)
	defer func() {
		for i := len(d.cleanups) - 1; i >= 0; i-- {
			d.cleanups[i]()
		}
		if o.keep {
			fmt.Fprintf(e.stderr, "demo folders kept in %s\n", d.base)
		} else {
			os.RemoveAll(d.base)
		}
	}()
	started := time.Now()

	// 1. A throwaway cluster.
	t := time.Now()
	if err := d.startCluster(ctx); err != nil {
		return err
	}
	d.say("postgres", t, "PostgreSQL %s on 127.0.0.1:%d, data checksums on", filepath.Base(filepath.Dir(d.pgBin)), d.port)

	// 2. A repository the postgres user can read (restore_command runs as it).
	t = time.Now()
	if err := d.initRepo(ctx); err != nil {
		return err
	}
	d.say("repo", t, "encrypted repository in %s", filepath.Join(d.base, "repo"))

	// 3. WAL streaming in the background.
	t = time.Now()
	stopStream, err := d.startStreamer(ctx)
	if err != nil {
		return err
	}
	d.say("stream", t, "`pgvault wal stream` running on slot pgvault")

	// 4. Data, markers, a base backup.
	t = time.Now()
	if out, err := d.runPG(ctx, "pgbench", "-i", "-q", "-s", strconv.Itoa(o.scale), "-h", "127.0.0.1", "-p", strconv.Itoa(d.port), "-U", "postgres", "postgres"); err != nil {
		return fmt.Errorf("pgbench -i: %v: %s", err, lastLines(out, 3))
	}
	if err := d.sql(ctx, "CREATE TABLE demo_markers (id serial PRIMARY KEY, note text, at timestamptz DEFAULT clock_timestamp())"); err != nil {
		return err
	}
	d.say("load", t, "pgbench scale %d loaded", o.scale)
	t = time.Now()
	var rep struct {
		ID          string  `json:"id"`
		BytesRead   int64   `json:"bytes_read"`
		StoredBytes int64   `json:"stored_bytes"`
		Seconds     float64 `json:"seconds"`
	}
	if err := d.pgvaultJSON(ctx, &rep, "--pg", d.replConn(), "backup", "--fast-checkpoint", "--label", "demo"); err != nil {
		return err
	}
	d.say("backup", t, "base backup %s: %s read, %s stored", rep.ID[:8], service.HumanBytes(rep.BytesRead), service.HumanBytes(rep.StoredBytes))

	// 5. Load with markers; the point in time lies between two batches.
	t = time.Now()
	bench := exec.CommandContext(ctx, filepath.Join(d.pgBin, "pgbench"), "-c", "2", "-T", "4", "-h", "127.0.0.1", "-p", strconv.Itoa(d.port), "-U", "postgres", "postgres")
	bench.Start()
	for i := 1; i <= 10; i++ {
		if err := d.sql(ctx, "INSERT INTO demo_markers (note) VALUES ($1)", fmt.Sprintf("before %d", i)); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	pointInTime := time.Now().UTC()
	time.Sleep(200 * time.Millisecond)
	for i := 1; i <= 5; i++ {
		if err := d.sql(ctx, "INSERT INTO demo_markers (note) VALUES ($1)", fmt.Sprintf("after %d", i)); err != nil {
			return err
		}
	}
	bench.Wait()
	if err := d.waitStored(ctx); err != nil {
		return err
	}
	d.say("markers", t, "pgbench running; 10 markers before %s, 5 after; streamer caught up", pointInTime.Format("15:04:05.000"))

	// 6. Mount at that point in time and start PostgreSQL on it.
	t = time.Now()
	mnt := filepath.Join(d.base, "instant")
	scratch := filepath.Join(d.base, "scratch")
	os.MkdirAll(mnt, 0o755)
	unmount, err := d.mount(ctx, mnt, scratch, pointInTime)
	if err != nil {
		return err
	}
	mounted := time.Since(t)
	port2, err := freeTCPPort()
	if err != nil {
		return err
	}
	if out, err := d.runPG(ctx, "pg_ctl", "-D", mnt, "-l", filepath.Join(d.base, "log", "instant.log"), "-w", "-t", "120",
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", port2, d.sock), "start"); err != nil {
		unmount()
		return fmt.Errorf("start PostgreSQL on the mount: %v: %s", err, lastLines(out, 5))
	}
	conn2 := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", port2)
	state, markers, err := waitMarkers(ctx, conn2)
	d.runPG(context.WithoutCancel(ctx), "pg_ctl", "-D", mnt, "-w", "-m", "fast", "stop")
	unmount()
	if err != nil {
		return err
	}
	d.say("instant", t, "mounted in %.2fs, PostgreSQL %s on the mount; markers there: %s", mounted.Seconds(), state, strings.Join(markers, ", "))
	if len(markers) != 10 {
		return problemsf("demo: the point-in-time mount shows %d markers, expected the 10 committed before %s", len(markers), pointInTime.Format(time.RFC3339Nano))
	}

	// 7. One table as it was at that point in time, with pg_dump.
	t = time.Now()
	var drep struct {
		Tables []struct {
			Rows *int64 `json:"rows"`
		} `json:"tables"`
	}
	dumpFile := filepath.Join(d.base, "demo_markers.sql")
	if err := d.pgvaultJSON(ctx, &drep, "dump", "--table", "demo_markers", "--to", pointInTime.Format(time.RFC3339Nano), "--pg-bin", d.pgBin, "-f", dumpFile); err != nil {
		return err
	}
	if len(drep.Tables) != 1 || drep.Tables[0].Rows == nil || *drep.Tables[0].Rows != 10 {
		return problemsf("demo: the dump of demo_markers at %s does not hold the 10 markers committed before it", pointInTime.Format(time.RFC3339Nano))
	}
	d.say("dump", t, "pgvault dump --table demo_markers --to %s: the 10 markers, with pg_dump, nothing restored (%s)", pointInTime.Format("15:04:05.000"), dumpFile)

	// 8. A copy-out restore to the same point, ready to start.
	t = time.Now()
	var rrep struct {
		Files int64 `json:"files"`
		Bytes int64 `json:"bytes"`
	}
	restored := filepath.Join(d.base, "restored")
	if err := os.Mkdir(restored, 0o700); err != nil {
		return err
	}
	if err := os.Chown(restored, int(d.owner.UID), int(d.owner.GID)); err != nil {
		return err
	}
	if err := d.pgvaultJSON(ctx, &rrep, "restore", "--target", restored, "--to", pointInTime.Format(time.RFC3339Nano)); err != nil {
		return err
	}
	d.say("restore", t, "pgvault restore --to %s: %d files, %s, configured to recover to that point", pointInTime.Format("15:04:05.000"), rrep.Files, service.HumanBytes(rrep.Bytes))

	// 9. A second backup, and both browsed by table name.
	t = time.Now()
	var rep2 struct {
		ID string `json:"id"`
	}
	if err := d.pgvaultJSON(ctx, &rep2, "--pg", d.replConn(), "backup", "--fast-checkpoint", "--label", "demo 2"); err != nil {
		return err
	}
	browse := filepath.Join(d.base, "browse")
	os.MkdirAll(browse, 0o755)
	unmountBrowse, err := d.mountWith(ctx, browse, "snapshots/latest")
	if err != nil {
		return err
	}
	first := filepath.Join(browse, "tables", rep.ID[:8], "postgres", "public.pgbench_accounts")
	second := filepath.Join(browse, "tables", rep2.ID[:8], "postgres", "public.pgbench_accounts")
	ents, err := os.ReadDir(first)
	var files []string
	for _, e := range ents {
		files = append(files, e.Name())
	}
	diff, _ := exec.CommandContext(ctx, "diff", "-rq", first, second).CombinedOutput()
	unmountBrowse()
	if err != nil || len(files) == 0 {
		return fmt.Errorf("demo: the browse mount shows no files for pgbench_accounts (%v)", err)
	}
	changed := strings.Count(string(diff), " differ")
	d.say("browse", t, "second backup %s; tables/<backup>/postgres/public.pgbench_accounts holds %s; diff -rq between the two backups: %d of them changed (pgbench ran between)",
		rep2.ID[:8], strings.Join(files, " "), changed)

	// 10. Boot verification of the backup, as a drill would.
	t = time.Now()
	var vrep map[string]any
	if err := d.pgvaultJSON(ctx, &vrep, "verify", "latest", "--boot", "--sql", "SELECT count(*) FROM pgbench_accounts"); err != nil {
		return err
	}
	d.say("verify", t, "verify --boot: PostgreSQL recovered on a mount of the backup, pg_amcheck and the SQL check passed")

	stopStream()
	t = time.Now()
	var chk struct {
		OK bool `json:"ok"`
	}
	if err := d.pgvaultJSON(ctx, &chk, "repo", "check"); err != nil {
		return err
	}
	d.say("check", t, "repository check: ok")
	summary := fmt.Sprintf("done in %.1fs: backup, continuous WAL, a point-in-time data directory PostgreSQL started on, one table dumped and the cluster restored as of that point, two backups browsed by table name, and a verified backup", time.Since(started).Seconds())
	return e.out.emit(map[string]any{"steps": d.steps, "summary": summary}, func(w io.Writer) {
		fmt.Fprintln(w, summary)
	})
}

func pgvaultCheckFUSE() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return errors.New("demo: /dev/fuse is missing: load the fuse module (modprobe fuse) or run in a machine that has it")
	}
	return nil
}

func (d *demo) startCluster(ctx context.Context) error {
	d.data = filepath.Join(d.base, "data")
	d.sock = filepath.Join(d.base, "sock")
	for _, dir := range []string{d.data, d.sock, filepath.Join(d.base, "log")} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		os.Chown(dir, int(d.owner.UID), int(d.owner.GID))
	}
	if out, err := d.runPG(ctx, "initdb", "-D", d.data, "-A", "trust", "-U", "postgres", "--data-checksums", "--no-sync"); err != nil {
		return fmt.Errorf("initdb: %v: %s", err, lastLines(out, 3))
	}
	var err error
	if d.port, err = freeTCPPort(); err != nil {
		return err
	}
	if out, err := d.runPG(ctx, "pg_ctl", "-D", d.data, "-l", filepath.Join(d.base, "log", "postgres.log"), "-w",
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", d.port, d.sock), "start"); err != nil {
		return fmt.Errorf("start PostgreSQL: %v: %s", err, lastLines(out, 5))
	}
	d.cleanups = append(d.cleanups, func() {
		d.runPG(context.Background(), "pg_ctl", "-D", d.data, "-w", "-m", "immediate", "stop")
	})
	return nil
}

func (d *demo) initRepo(ctx context.Context) error {
	secret := make([]byte, 16)
	rand.Read(secret)
	pw := filepath.Join(d.base, "password")
	if err := os.WriteFile(pw, []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
		return err
	}
	os.Chown(pw, int(d.owner.UID), int(d.owner.GID))
	for _, dir := range []string{"repo", "cache"} {
		os.Mkdir(filepath.Join(d.base, dir), 0o700)
		os.Chown(filepath.Join(d.base, dir), int(d.owner.UID), int(d.owner.GID))
	}
	d.repoEnv = []string{"PGVAULT_REPO=" + filepath.Join(d.base, "repo"), "PGVAULT_PASSWORD_FILE=" + pw, "PGVAULT_CACHE_DIR=" + filepath.Join(d.base, "cache")}
	_, err := d.pgvault(ctx, "repo", "init")
	return err
}

func (d *demo) replConn() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres replication=true sslmode=disable", d.port)
}

func (d *demo) sqlConn() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", d.port)
}

func (d *demo) sql(ctx context.Context, q string, args ...any) error {
	conn, err := pgx.Connect(ctx, d.sqlConn())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, q, args...); err != nil {
		return fmt.Errorf("demo SQL %q: %w", q, err)
	}
	return nil
}

func (d *demo) startStreamer(ctx context.Context) (func(), error) {
	cmd := exec.Command(d.self, "wal", "stream", "--pg", d.replConn(), "--flush-interval", "200ms")
	cmd.Env = append(os.Environ(), d.repoEnv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: d.owner.UID, Gid: d.owner.GID}}
	cmd.Dir = d.base
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
	}
	d.cleanups = append(d.cleanups, stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, d.sqlConn())
		if err == nil {
			var active bool
			err = conn.QueryRow(ctx, "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = 'pgvault'").Scan(&active)
			conn.Close(ctx)
			if err == nil && active {
				return stop, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the WAL streamer did not start: %s", lastLines(log.String(), 3))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitStored waits until the slot confirms everything written so far.
func (d *demo) waitStored(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, d.sqlConn())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var target string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&target); err != nil {
		return err
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT restart_lsn >= $1::pg_lsn FROM pg_replication_slots WHERE slot_name = 'pgvault'", target).Scan(&ok); err == nil && ok {
			return nil
		}
	}
	return errors.New("the WAL streamer did not store the newest WAL within a minute")
}

func (d *demo) mount(ctx context.Context, mnt, scratch string, at time.Time) (func(), error) {
	// The mount runs as root (FUSE); PostgreSQL on it runs as postgres.
	return d.mountWith(ctx, mnt, "PG_VERSION", "--backup", "latest", "--to", at.Format(time.RFC3339Nano), "--scratch", scratch, "--owner", "postgres")
}

// mountWith runs `pgvault mount mnt args...` until the returned function
// stops it; ready is a path under mnt that exists once the mount is up.
func (d *demo) mountWith(ctx context.Context, mnt, ready string, args ...string) (func(), error) {
	cmd := exec.Command(d.self, append([]string{"mount", mnt}, args...)...)
	cmd.Env = append(os.Environ(), d.repoEnv...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	unmount := func() {
		select {
		case <-exited:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			exec.Command(d.self, "umount", mnt).Run()
		}
	}
	d.cleanups = append(d.cleanups, unmount)
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(mnt, ready)); err == nil {
			return unmount, nil
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("the mount did not come up: %s", lastLines(log.String(), 3))
		default:
		}
	}
	unmount()
	return nil, fmt.Errorf("the mount did not come up within a minute: %s", lastLines(log.String(), 3))
}

// waitMarkers waits for recovery to finish and lists the markers.
func waitMarkers(ctx context.Context, conninfo string) (string, []string, error) {
	for deadline := time.Now().Add(120 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		conn, err := pgx.Connect(ctx, conninfo)
		if err != nil {
			continue
		}
		var inRecovery bool
		conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery)
		if inRecovery {
			conn.Close(ctx)
			continue
		}
		rows, err := conn.Query(ctx, "SELECT note FROM demo_markers ORDER BY id")
		if err != nil {
			conn.Close(ctx)
			return "", nil, err
		}
		var notes []string
		for rows.Next() {
			var n string
			rows.Scan(&n)
			notes = append(notes, n)
		}
		conn.Close(ctx)
		return "recovered to the point in time and promoted", notes, rows.Err()
	}
	return "", nil, errors.New("PostgreSQL on the mount did not finish recovery within two minutes")
}

// runPG runs a PostgreSQL program as the postgres OS user.
func (d *demo) runPG(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(d.pgBin, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: d.owner.UID, Gid: d.owner.GID}}
	cmd.Dir = d.base
	cmd.Env = append(os.Environ(), "PGHOST=127.0.0.1", "PGUSER=postgres")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// pgvault runs a pgvault command as the postgres OS user, so that the
// repository it writes stays readable by restore_command; asRoot is for
// the commands that mount FUSE.
func (d *demo) pgvault(ctx context.Context, args ...string) (string, error) {
	return d.pgvaultAs(ctx, false, args...)
}

func (d *demo) pgvaultAs(ctx context.Context, asRoot bool, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, d.self, args...)
	cmd.Env = append(os.Environ(), d.repoEnv...)
	if !asRoot {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: d.owner.UID, Gid: d.owner.GID}}
		cmd.Dir = d.base
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("pgvault %s: %s", args[0], strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (d *demo) pgvaultJSON(ctx context.Context, into any, args ...string) error {
	asRoot := len(args) > 0 && (args[0] == "verify" || args[0] == "dump")
	out, err := d.pgvaultAs(ctx, asRoot, append([]string{"--output", "json"}, args...)...)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(out), into)
}

func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

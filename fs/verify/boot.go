package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	pgfs "github.com/pgvault/pgvault/fs"
	"github.com/pgvault/pgvault/fs/chunkread"
	"github.com/pgvault/pgvault/fs/overlay"
	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// OSUser is the account PostgreSQL runs as.
type OSUser struct {
	Name     string
	UID, GID uint32
	Groups   []uint32
	Home     string
}

// LookupUser finds an OS account by name.
func LookupUser(name string) (OSUser, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return OSUser{}, fmt.Errorf("OS user %q: %w (create it, or name another with --owner)", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return OSUser{}, fmt.Errorf("OS user %q has a non-numeric uid or gid", name)
	}
	o := OSUser{Name: name, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.ParseUint(id, 10, 32); err == nil {
				o.Groups = append(o.Groups, uint32(g))
			}
		}
	}
	return o, nil
}

// FindPGBin returns the folder of PostgreSQL major's server programs:
// given (which must hold that major's postgres: a server of another major
// would refuse the data directory, or worse), else where pg_config says
// if its version matches, else the distributions' layouts
// (/usr/lib/postgresql/<major>/bin on Debian, /usr/pgsql-<major>/bin from
// the PGDG RPMs).
func FindPGBin(given string, major int) (string, error) {
	has := func(dir string) bool {
		fi, err := os.Stat(filepath.Join(dir, "pg_ctl"))
		return err == nil && !fi.IsDir()
	}
	if given != "" {
		if !has(given) {
			return "", fmt.Errorf("--pg-bin %s holds no pg_ctl: give the folder of PostgreSQL %d's programs", given, major)
		}
		if got := versionMajor(filepath.Join(given, "postgres")); got != major {
			return "", fmt.Errorf("--pg-bin %s holds the programs of PostgreSQL %d, and the backup is of PostgreSQL %d: give the folder of PostgreSQL %d's programs", given, got, major, major)
		}
		return given, nil
	}
	var tried []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if has(dir) && versionMajor(filepath.Join(dir, "postgres")) == major {
			return dir, nil
		}
		tried = append(tried, "pg_config")
	}
	for _, dir := range []string{fmt.Sprintf("/usr/lib/postgresql/%d/bin", major), fmt.Sprintf("/usr/pgsql-%d/bin", major)} {
		if has(dir) && versionMajor(filepath.Join(dir, "postgres")) == major {
			return dir, nil
		}
		tried = append(tried, dir)
	}
	return "", fmt.Errorf("PostgreSQL %d programs not found (%s): install postgresql-%d or give --pg-bin DIR", major, strings.Join(tried, ", "), major)
}

// FindClient finds a PostgreSQL client program: in bin (the server's
// programs) first, else the newest installed on this host (pg_config's
// folder, /usr/lib/postgresql/*/bin). A client of an older major serves a
// newer server for what verify asks of it (pg_amcheck calls the amcheck
// extension's functions over SQL); some server-only installations carry
// no clients at all.
func FindClient(bin, name string) (string, bool) {
	if p := filepath.Join(bin, name); isFile(p) {
		return p, true
	}
	var dirs []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	installed, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(installed, func(a, b string) int { return versionOfDir(b) - versionOfDir(a) })
	for _, dir := range append(dirs, installed...) {
		if p := filepath.Join(dir, name); isFile(p) {
			return p, true
		}
	}
	return "", false
}

// versionMajor is the major version a postgres binary reports (0 when it
// does not run).
func versionMajor(postgres string) int {
	out, err := exec.Command(postgres, "--version").Output()
	if err != nil {
		return 0
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return 0
	}
	m, _ := strconv.Atoi(strings.SplitN(f[len(f)-1], ".", 2)[0])
	return m
}

func versionOfDir(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

// BootOptions configure Boot.
type BootOptions struct {
	// Owner runs PostgreSQL and appears to own the data directory.
	Owner OSUser
	// PGBin is the folder of pg_ctl, postgres and pg_amcheck.
	PGBin string
	// SegmentSize is the cluster's WAL segment size (0: 16 MiB).
	SegmentSize uint64
	// Recovery is written into the view (its restore_command is replaced
	// by one that copies WAL out of the mount). Its
	// action must be promote or pause.
	Recovery wal.RecoveryConfig
	// Settings are appended to postgresql.auto.conf in the view.
	Settings []wal.Setting
	// ServerSettings are passed on the postgres command line (name=value).
	ServerSettings []string
	// SQL, if set, must run without error; its first row is reported.
	SQL string
	// AmCheck is "off", "on" (pg_amcheck: heap and B-tree structure of
	// every table and index of every database) or "full" (also
	// --heapallindexed: every heap tuple must have its index entries).
	AmCheck string
	// DBUser is the role to connect as; "" means Owner.Name.
	DBUser string
	// Timeout bounds startup plus recovery; 0 means 10 minutes.
	Timeout time.Duration
	// TempDir is where the temporary folders go; "" means os.TempDir().
	TempDir string
	// Keep leaves the temporary folders (scratch, log) behind.
	Keep bool
	// StopImmediate stops the server without a shutdown checkpoint (or
	// restartpoint): for a boot whose data directory is thrown away
	// unread, where writing every dirty page into the scratch folder
	// (about 1 s) buys nothing. AfterStop must not be set with it.
	StopImmediate bool
	// WritebackCache mounts with the kernel's writeback cache (see
	// pgfs.MountOptions): a replay that evicts many pages writes them in
	// large requests.
	WritebackCache bool
	// Prefetcher and Logger are passed to the mount.
	Prefetcher *chunkread.Prefetcher
	Logger     *slog.Logger
	// Progress, if set, is told when each phase starts.
	Progress func(phase string)
	// AtTarget, if set, runs once recovery has ended (promoted, or paused
	// at its target) with a libpq conninfo of the server (database
	// postgres; a later dbname= overrides it); an error is a problem, and
	// the checks after it do not run.
	AtTarget func(ctx context.Context, conninfo string) error
	// AfterStop, if set, runs once the server has stopped cleanly and no
	// problem was found, with the overlay still open, so that what
	// PostgreSQL changed can be read without the mount (Changes,
	// OpenFile). Boot returns its error.
	AfterStop func(ctx context.Context, ov *overlay.Overlay) error
}

// BootReport is the result of Boot.
type BootReport struct {
	Mountpoint string             `json:"mountpoint"`
	Scratch    string             `json:"scratch"`
	ServerLog  string             `json:"server_log"`
	Port       int                `json:"port"`
	Phases     map[string]float64 `json:"phases"` // seconds: mount, start, recovery, amcheck, sql, stop
	// Reached says how recovery ended: "promoted" or "paused".
	Reached   string        `json:"reached,omitempty"`
	AmCheck   string        `json:"amcheck"`
	SQLRow    []string      `json:"sql_first_row,omitempty"`
	Problems  []Problem     `json:"problems"`
	Overlay   overlay.Stats `json:"overlay"`
	LogTail   string        `json:"server_log_tail,omitempty"`
	Kept      bool          `json:"kept"`
	TotalSecs float64       `json:"total_seconds"`
}

// Boot mounts snapshot s in instant mode in temporary folders, starts
// PostgreSQL on it as opts.Owner (only a unix socket in a private folder,
// trust authentication from a private pg_hba.conf), waits until recovery
// has promoted (or paused at its target), runs pg_amcheck and opts.SQL,
// then stops PostgreSQL, unmounts and removes the folders. Problems
// (PostgreSQL would not start or recover, pg_amcheck found corruption,
// the SQL failed, a chunk could not be read) are in the report; an error
// means Boot itself could not run.
func Boot(ctx context.Context, r *repo.Repository, s *repo.Snapshot, opts BootOptions) (rep *BootReport, err error) {
	start := time.Now()
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Minute
	}
	if opts.DBUser == "" {
		opts.DBUser = opts.Owner.Name
	}
	if opts.AmCheck == "" {
		opts.AmCheck = "on"
	}
	if opts.StopImmediate && opts.AfterStop != nil {
		return nil, errors.New("boot: AfterStop reads the data directory, which an immediate stop leaves unflushed")
	}
	switch opts.Recovery.EffectiveAction() {
	case wal.ActionPromote, wal.ActionPause:
	default:
		if !opts.Recovery.Target.IsEnd() {
			return nil, fmt.Errorf("boot verification needs target action promote or pause, not %s", opts.Recovery.EffectiveAction())
		}
	}
	progress := func(p string) {
		if opts.Progress != nil {
			opts.Progress(p)
		}
	}
	rep = &BootReport{Phases: map[string]float64{}, Problems: []Problem{}, AmCheck: "skipped"}
	problem := func(object, format string, args ...any) {
		rep.Problems = append(rep.Problems, Problem{Object: object, Message: fmt.Sprintf(format, args...)})
	}
	phase := func(name string, t time.Time) { rep.Phases[name] = time.Since(t).Seconds() }

	base, err := os.MkdirTemp(opts.TempDir, "pgvault-verify-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(base, 0o755); err != nil {
		return nil, err
	}
	o := opts.Owner
	mnt, scratch := filepath.Join(base, "data"), filepath.Join(base, "scratch")
	sock, logDir, confDir := filepath.Join(base, "sock"), filepath.Join(base, "log"), filepath.Join(base, "conf")
	rep.Mountpoint, rep.Scratch, rep.ServerLog = mnt, scratch, filepath.Join(logDir, "postgres.log")
	for _, d := range []string{mnt, sock, logDir, confDir} {
		if err := mkdirOwned(d, o); err != nil {
			os.RemoveAll(base)
			return nil, err
		}
	}
	hba := filepath.Join(confDir, "pg_hba.conf")
	if err := os.WriteFile(hba, []byte("# pgvault verify: only this private socket, trusted\nlocal all all trust\n"), 0o600); err == nil {
		err = os.Chown(hba, int(o.UID), int(o.GID))
	}
	if err != nil {
		os.RemoveAll(base)
		return nil, err
	}

	// Mount.
	progress("mount")
	t := time.Now()
	ov, err := overlay.Open(ctx, r, s, overlay.Options{Scratch: scratch, Owner: overlay.Owner{UID: o.UID, GID: o.GID},
		Prefetcher: opts.Prefetcher, Logger: opts.Logger, Ephemeral: !opts.Keep})
	if err != nil {
		os.RemoveAll(base)
		return nil, err
	}
	rc := opts.Recovery
	// WAL comes through the mount itself: PostgreSQL's user needs no
	// access to the repository.
	rc.RestoreCommand = pgfs.WALRestoreCommand(mnt)
	if _, err := ov.Prepare(ctx, overlay.PrepareOptions{Recovery: &rc, Settings: opts.Settings, Owner: overlay.Owner{UID: o.UID, GID: o.GID},
		Note: fmt.Sprintf("pgvault verify of backup %s", s.ShortID())}); err != nil {
		ov.Close(ctx)
		os.RemoveAll(base)
		return nil, err
	}
	m, err := pgfs.Mount(ctx, mnt, pgfs.NewInstantRoot(ov, pgfs.InstantOptions{Passthrough: true, ServeWAL: true, SegmentSize: opts.SegmentSize}), pgfs.MountOptions{FsName: "pgvault-verify", Logger: opts.Logger, WritebackCache: opts.WritebackCache})
	if err != nil {
		ov.Close(ctx)
		os.RemoveAll(base)
		return nil, err
	}
	phase("mount", t)
	// Whether the server runs is asked of the overlay, never through the
	// mount: a thread of this process waiting on its own mount when the
	// process is killed would wait for ever (the kernel keeps the FUSE
	// connection while a thread of its server lives), and with it the
	// server's WAL reads.
	running := func() bool { return ov.Exists(context.WithoutCancel(ctx), "postmaster.pid") }
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
		defer cancel()
		if uerr := m.Unmount(uctx); uerr != nil && err == nil {
			err = uerr
		}
		rep.Overlay = ov.Stats()
		if rep.Overlay.ReadErrors > 0 {
			problem("repository", "%d reads failed; the first: %s", rep.Overlay.ReadErrors, rep.Overlay.FirstReadError)
		}
		if cerr := ov.Close(context.WithoutCancel(ctx)); cerr != nil && err == nil {
			err = cerr
		}
		if len(rep.Problems) > 0 {
			rep.LogTail = tail(rep.ServerLog, 20)
		}
		rep.Kept = opts.Keep
		if !opts.Keep {
			os.RemoveAll(base)
		}
		rep.TotalSecs = time.Since(start).Seconds()
	}()

	// Start.
	progress("start")
	port, err := freePort()
	if err != nil {
		return rep, err
	}
	rep.Port = port
	pgOpts := []string{"-p", strconv.Itoa(port), "-k", shellQuote(sock), "-c", "listen_addresses=''",
		"-c", shellQuote("hba_file=" + hba), "-c", "logging_collector=off", "-c", "archive_mode=off"}
	for _, kv := range opts.ServerSettings {
		pgOpts = append(pgOpts, "-c", shellQuote(kv))
	}
	t = time.Now()
	runCtx, cancelRun := context.WithTimeout(ctx, opts.Timeout+30*time.Second)
	defer cancelRun()
	out, err := asUser(runCtx, o, filepath.Join(opts.PGBin, "pg_ctl"), "start", "-D", mnt, "-l", rep.ServerLog, "-w",
		"-t", strconv.Itoa(int(opts.Timeout/time.Second)), "-o", strings.Join(pgOpts, " ")).CombinedOutput()
	phase("start", t)
	if err != nil {
		problem("PostgreSQL", "would not start: %v: %s", err, lastLine(string(out)))
		stopServer(o, opts.PGBin, mnt, opts.StopImmediate, rep, running)
		return rep, nil
	}
	defer func() {
		progress("stop")
		t := time.Now()
		stopServer(o, opts.PGBin, mnt, opts.StopImmediate, rep, running)
		phase("stop", t)
		if opts.AfterStop != nil && len(rep.Problems) == 0 && err == nil {
			// Whatever the kernel still holds must reach the overlay
			// before it is read without the mount.
			if err = m.Sync(); err == nil {
				err = opts.AfterStop(ctx, ov)
			}
		}
	}()

	// Recovery.
	progress("recovery")
	t = time.Now()
	conninfo := fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable connect_timeout=10", sock, port, pg.QuoteConnValue(opts.DBUser))
	reached, err := waitRecovery(runCtx, conninfo, rc, running)
	phase("recovery", t)
	if err != nil {
		problem("recovery", "%v", err)
		return rep, nil
	}
	rep.Reached = reached
	if opts.AtTarget != nil {
		// Not bounded by Timeout: what runs at the target (a dump of a
		// large database) may take longer than the recovery did.
		if err := opts.AtTarget(ctx, conninfo); err != nil {
			problem("recovery target", "%v", err)
			return rep, nil
		}
	}

	// pg_amcheck.
	progress("amcheck")
	t = time.Now()
	rep.AmCheck = runAmCheck(runCtx, o, opts, sock, port, reached, problem)
	phase("amcheck", t)

	// SQL.
	if opts.SQL != "" {
		progress("sql")
		t = time.Now()
		row, err := querySQL(runCtx, conninfo, opts.SQL)
		phase("sql", t)
		if err != nil {
			problem("--sql", "%v", err)
		} else {
			rep.SQLRow = row
		}
	}
	return rep, nil
}

func mkdirOwned(dir string, o OSUser) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	return os.Chown(dir, int(o.UID), int(o.GID))
}

// asUser builds a command run as o, in "/", with an environment free of
// libpq and pgvault variables.
func asUser(ctx context.Context, o OSUser, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = "/"
	cmd.WaitDelay = 10 * time.Second
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") || k == "HOME" || k == "USER" || k == "LOGNAME" || k == "LANG" || strings.HasPrefix(k, "LC_") {
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = append(env, "HOME="+o.Home, "USER="+o.Name, "LOGNAME="+o.Name, "LC_ALL=C")
	if uint32(os.Geteuid()) != o.UID {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: o.UID, Gid: o.GID, Groups: o.Groups}}
	}
	return cmd
}

func stopServer(o OSUser, bin, dataDir string, immediate bool, rep *BootReport, running func() bool) {
	if !running() {
		// An interrupted start may have left a postmaster that has not
		// written its pid file yet.
		quitPostmasters(dataDir)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	mode := "fast"
	if immediate {
		mode = "immediate"
	}
	if out, err := asUser(ctx, o, filepath.Join(bin, "pg_ctl"), "stop", "-D", dataDir, "-m", mode, "-w", "-t", "120").CombinedOutput(); err != nil {
		rep.Problems = append(rep.Problems, Problem{Object: "PostgreSQL", Message: "did not stop cleanly: " + lastLine(string(out))})
		asUser(ctx, o, filepath.Join(bin, "pg_ctl"), "stop", "-D", dataDir, "-m", "immediate", "-w").Run()
	}
}

// waitRecovery waits until the server has promoted (or, for a pause
// target, paused at it).
func waitRecovery(ctx context.Context, conninfo string, rc wal.RecoveryConfig, running func() bool) (string, error) {
	pause := !rc.Target.IsEnd() && rc.EffectiveAction() == wal.ActionPause
	var last error
	for {
		if !running() {
			return "", fmt.Errorf("PostgreSQL exited during recovery (see the server log)")
		}
		state, err := recoveryState(ctx, conninfo)
		switch {
		case err == nil && state == "promoted":
			return state, nil
		case err == nil && pause && state == "paused":
			return state, nil
		case err != nil:
			last = err
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = fmt.Errorf("still %s", state)
			}
			return "", fmt.Errorf("recovery did not finish in time (last: %v)", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func recoveryState(ctx context.Context, conninfo string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, conninfo)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var in bool
	var pause string
	if err := conn.QueryRow(cctx, "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END").Scan(&in, &pause); err != nil {
		return "", err
	}
	switch {
	case !in:
		return "promoted", nil
	case pause == "paused":
		return "paused", nil
	}
	return "recovering", nil
}

// runAmCheck runs pg_amcheck over every database and reports how it went.
func runAmCheck(ctx context.Context, o OSUser, opts BootOptions, sock string, port int, reached string, problem func(string, string, ...any)) string {
	if opts.AmCheck == "off" {
		return "skipped: --amcheck off"
	}
	prog, ok := FindClient(opts.PGBin, "pg_amcheck")
	if !ok {
		problem("pg_amcheck", "pg_amcheck not found in %s nor among this host's PostgreSQL programs: install the PostgreSQL client programs, or run with --amcheck off", opts.PGBin)
		return "not run: pg_amcheck not found"
	}
	if reached != "promoted" {
		return "skipped: the server is paused in recovery (read-only), so the amcheck extension cannot be installed"
	}
	args := []string{"-h", sock, "-p", strconv.Itoa(port), "-U", opts.DBUser, "--all", "--install-missing", "--no-strict-names"}
	if opts.AmCheck == "full" {
		args = append(args, "--heapallindexed")
	}
	out, err := asUser(ctx, o, prog, args...).CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		what := "failed"
		if errors.As(err, &ee) && ee.ExitCode() == 2 {
			what = "found corruption"
		}
		problem("pg_amcheck", "%s: %s", what, lastLines(string(out), 3))
		return what
	}
	return "clean"
}

func querySQL(ctx context.Context, conninfo, sql string) ([]string, error) {
	conn, err := pgx.Connect(ctx, conninfo)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	if rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return nil, err
		}
		out = make([]string, len(vals))
		for i, v := range vals {
			out[i] = fmt.Sprint(v)
		}
	}
	for rows.Next() {
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if out == nil {
		out = []string{}
	}
	return out, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func lastLine(s string) string { return lastLines(s, 1) }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

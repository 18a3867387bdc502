//go:build bench

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// pgvaultBin is the binary under test, built by TestMain into a folder
// postgres can enter (restore_command runs it as postgres).
var pgvaultBin string

// moduleRoot is the repository's root, from this package's folder.
const moduleRoot = "../.."

func TestMain(m *testing.M) {
	for _, did := range reapLedgers() {
		fmt.Fprintln(os.Stderr, "bench: left by an earlier run:", did)
	}
	dir, err := os.MkdirTemp("", "pgvault-bench-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755)
	pgvaultBin = filepath.Join(dir, "pgvault")
	// The test build: its fault backend adds the latency of the
	// remote-repository rows (PGVAULT_TEST_FAULTS); with the variable unset
	// it is the release binary's code path.
	build := exec.Command("go", "build", "-tags", "pgvault_testfaults,disable_grpc_modules,urfave_cli_no_docs", "-o", pgvaultBin, moduleRoot+"/cmd/pgvault")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: build pgvault:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type config struct {
	scale, count  int
	pgbenchSec    int
	shortSec      int // pgbench -T of the pgvault-only 4th backup
	streamSec     int
	walSegments   int
	ingestMB      int // WAL backlog of the ingest ceiling step
	doc, chart    string
	chartRel      string
	reproduce     string
	skipBarman    bool
	keepGoingNote string
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

func loadConfig(t *testing.T) config {
	c := config{
		scale:       envInt(t, "SCALE", 100),
		count:       envInt(t, "COUNT", 3),
		pgbenchSec:  envInt(t, "BENCH_PGBENCH_SECONDS", 60),
		shortSec:    envInt(t, "BENCH_SHORT_PGBENCH_SECONDS", 30),
		streamSec:   envInt(t, "BENCH_STREAM_SECONDS", 30),
		walSegments: envInt(t, "BENCH_WAL_SEGMENTS", 16),
		ingestMB:    envInt(t, "BENCH_INGEST_MB", 1024),
		doc:         os.Getenv("BENCH_DOC"),
		chart:       os.Getenv("BENCH_CHART"),
		skipBarman:  os.Getenv("BENCH_BARMAN") == "0",
	}
	if c.doc == "" {
		c.doc = filepath.Join(moduleRoot, "docs", "benchmarks.md")
	}
	if c.chart == "" {
		c.chart = filepath.Join(filepath.Dir(c.doc), "benchmarks.png")
	}
	if rel, err := filepath.Rel(filepath.Dir(c.doc), c.chart); err == nil {
		c.chartRel = rel
	}
	c.reproduce = fmt.Sprintf("SCALE=%d COUNT=%d make bench", c.scale, c.count)
	return c
}

// bench is one run of the peer benchmark.
type bench struct {
	t   *testing.T
	cfg config
	led *ledger
	c   *pgtest.Cluster
	res *Results

	work      string // postgres-owned folder for everything PostgreSQL or postgres-run tools touch
	profDir   string
	notes     []string
	commands  []string
	seen      map[string]bool
	stream    []StreamRun
	profiles  map[string]string // step -> CPU profile of pgvault's last run
	lastUsage map[string]usage  // step -> usage of pgvault's last run
	configs   []string          // peer configuration files, for the report

	slotStart string // restart_lsn of the streaming slot when it appeared

	pgbr   *pgbackrest
	barman *barman

	// firstQuery is what a started restore or instant mount must answer
	// (wantFirst) before it counts as up; empty: SELECT 1 (TestPeers).
	firstQuery, wantFirst string
	// mountDetail also records when the instant mount's data directory
	// became visible (StepMountReady; TestMountScales).
	mountDetail bool
}

// query returns the first query to wait for after a start, and its answer.
func (b *bench) query() (sql, want string) {
	if b.firstQuery == "" {
		return "SELECT 1", "1"
	}
	return b.firstQuery, b.wantFirst
}

func (b *bench) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.t.Log("note: " + msg)
	b.notes = append(b.notes, msg)
}

func (b *bench) logf(format string, args ...any) {
	b.t.Logf("%s "+format, append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// record remembers the exact command line of a step for the report, with
// the benchmark's temporary folders written as $WORK.
func (b *bench) record(what string, cmd *exec.Cmd) {
	line := strings.Join(quoteArgs(cmd.Args), " ")
	var envs []string
	for _, kv := range cmd.Env {
		if strings.HasPrefix(kv, "PGVAULT_") || strings.HasPrefix(kv, "RESTIC_") {
			k, v, _ := strings.Cut(kv, "=")
			envs = append(envs, k+"="+quoteArgs([]string{v})[0])
		}
	}
	if len(envs) > 0 {
		line = strings.Join(envs, " ") + " " + line
	}
	b.recordLine(what, line)
}

// recordLine remembers a command line (or a description of a step) for
// the report, once per what.
func (b *bench) recordLine(what, line string) {
	line = b.generalize(line)
	if b.seen[what] {
		return
	}
	b.seen[what] = true
	b.commands = append(b.commands, "# "+what, line)
}

var (
	tmpPath = regexp.MustCompile(`/tmp/[A-Za-z0-9._-]+`)
	// tmpQuery is a temporary path in a URL's query (the SFTP
	// repository's identity and known_hosts files).
	tmpQuery = regexp.MustCompile(`%2Ftmp%2F[A-Za-z0-9._-]+`)
)

func (b *bench) generalize(s string) string {
	s = strings.ReplaceAll(s, pgvaultBin, "pgvault")
	s = strings.ReplaceAll(s, pgtest.BinDir+"/", "")
	s = tmpPath.ReplaceAllString(s, "$$WORK")
	s = tmpQuery.ReplaceAllString(s, "$$WORK")
	if b.c != nil {
		s = strings.ReplaceAll(s, "port="+strconv.Itoa(b.c.Port()), "port=$PORT")
		s = strings.ReplaceAll(s, "-p "+strconv.Itoa(b.c.Port()), "-p $PORT")
	}
	return s
}

func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " '\"%$;&|") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return out
}

// rotate returns tools rotated left by n, so every tool takes every
// position across rounds.
func rotate[T any](tools []T, n int) []T {
	if len(tools) == 0 {
		return nil
	}
	n %= len(tools)
	return append(append([]T(nil), tools[n:]...), tools[:n]...)
}

// cpuTimes reads /proc/stat's cpu line (nil if it cannot).
func cpuTimes() CPUTimes {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil
	}
	t, _ := ParseCPUTimes(string(data))
	return t
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], ", ")
}

func TestPeers(t *testing.T) {
	began, cpu0 := time.Now(), cpuTimes()
	cfg := loadConfig(t)
	led, err := openLedger()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(led.remove)
	b := &bench{t: t, cfg: cfg, led: led, res: &Results{}, seen: map[string]bool{}, profiles: map[string]string{}, lastUsage: map[string]usage{}}
	rep := &Report{Date: time.Now(), Machine: machine(), Cores: runtime.NumCPU(), LoadStart: loadAvg(), Scale: cfg.scale, Count: cfg.count,
		Reproduce: cfg.reproduce, Chart: cfg.chartRel, PgbenchSec: cfg.pgbenchSec, ShortSec: cfg.shortSec, Headline: os.Getenv("BENCH_NOTE")}
	b.logf("scale %d, %d round(s); load average %s", cfg.scale, cfg.count, rep.LoadStart)
	if err := dropCaches(); err != nil {
		b.note("could not drop the page cache (%v): cold reads may be warm", err)
	}

	b.work = pgtest.TempDir(t)
	b.profDir = filepath.Join(b.work, "profiles")
	os.Mkdir(b.profDir, 0o755)
	ownByPostgres(t, b.profDir)

	b.c = pgtest.Start(t, pgtest.Options{Settings: map[string]string{
		"archive_mode":    "on",
		"archive_command": "/bin/true",
	}})
	b.logf("pgbench -i -s %d", cfg.scale)
	initStart := time.Now()
	b.c.PgbenchInit(t, cfg.scale)
	b.c.Checkpoint(t)
	rep.DataDirMB = treeMB(b.c.DataDir())
	b.logf("pgbench -i done in %.0fs; data directory %.0f MB", time.Since(initStart).Seconds(), rep.DataDirMB)

	b.pgbr = b.setupPgbackrest()
	if !cfg.skipBarman {
		b.barman = b.setupBarman()
	} else {
		b.note("barman skipped (BENCH_BARMAN=0)")
	}

	b.settle()
	for r := 0; r < cfg.count; r++ {
		b.round(r)
	}
	b.walPush()
	for r := 0; r < cfg.count; r++ {
		b.streamLag(r)
	}
	for r := 0; r < cfg.count; r++ {
		b.walIngest(r)
	}
	rep.Stream = b.stream

	rep.Profiles = b.profiles2()
	rep.Results = b.res
	rep.Goals = EvaluateGoals(b.res, cfg.scale)
	rep.Versions = versions()
	rep.Commands = append(b.commands, b.configs...)
	rep.Notes = append(b.notes, standingNotes(cfg)...)
	rep.LoadEnd = loadAvg()
	rep.StealPct = StealPct(cpu0, cpuTimes())
	rep.Runtime = time.Since(began)

	png, err := RenderChart(fmt.Sprintf("pgvault vs peers: wall time in seconds, scale %d", cfg.scale),
		fmt.Sprintf("median of %d run(s), line = min-max. %s", cfg.count, rep.Date.UTC().Format("2006-01-02")),
		ChartGroups(b.res, ChartSteps))
	if err != nil {
		t.Fatalf("chart: %v", err)
	}
	if err := os.WriteFile(cfg.chart, png, 0o644); err != nil {
		t.Fatalf("write chart: %v", err)
	}
	if err := ReplaceSection(cfg.doc, SectionName, rep.Render()); err != nil {
		t.Fatalf("write %s: %v", cfg.doc, err)
	}
	b.logf("wrote %s and %s (%s)", cfg.doc, cfg.chart, rep.Runtime.Round(time.Second))
	for _, g := range rep.Goals {
		b.logf("goal %s: %s (%s)", g.Name, g.Status, g.Detail)
	}
}

// standingNotes are caveats true of every run.
func standingNotes(cfg config) []string {
	return []string{
		"pgvault's repository is encrypted (AES-256-GCM) and so is restic's; pgBackRest's and barman's are not (no repo cipher configured), and pg_basebackup's output is a plain tar.zst.",
		"Stored MB counts the backup only: for pgvault the snapshot's `stored_bytes` (new sealed blobs, metadata included), for pgBackRest the backup set folder, for barman the backup folder, for restic the repository's growth, for pg_basebackup the output folder. WAL archived meanwhile is not counted for anyone.",
		"WAL archiving: archive_command is switched (ALTER SYSTEM + pg_reload_conf) to the tool being measured — `pgvault wal push`, `pgbackrest archive-push`, or a copy into barman's incoming folder — and to /bin/true for pg_basebackup, restic and the changes between backups; before every switch the benchmark waits until no segment is waiting to be archived. So each backup that waits for its last WAL segment (all but restic's) waits for its own archiver.",
		"Before every measured step: CHECKPOINT, then sync and `echo 3 > /proc/sys/vm/drop_caches`, so every tool reads cold. Every backup asks for a fast checkpoint.",
		"Before round 1, after `pgbench -i`, the data directory is read once from a cold cache, unmeasured: the first step to fill the page cache after a memory-heavy step pays for the host handing memory back (see the noise note above), and without this read that was always round 1's first full backup, pgvault's.",
		"restic backs up the data directory of the running cluster right after a CHECKPOINT (as the field notes measured): the copy is crash-consistent at best, and its restore starts with crash recovery. postmaster.pid and postmaster.opts are excluded.",
		"Restores recover only to consistency (pgvault `--to-immediate`, pgBackRest `--type=immediate`, both promote); `start + SELECT 1` is `pg_ctl start --no-wait` on the restored directory with archive_mode=off, then SELECT 1 tried every 10 ms until it answers (pg_ctl's own wait looks only every 100 ms, which would round every start up to a tenth of a second). `restore to first query` is the sum, per run; for the instant mount it is mount (until the mount point shows PG_VERSION, looked at every 2 ms) + start + SELECT 1.",
		fmt.Sprintf("pgbench between the second and third backup: `pgbench -T %d` (1 client). The 5%% change: `UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 5%% of the rows` (contiguous), then CHECKPOINT. After the restores and mount reads, pgvault alone takes a fourth backup after a further `pgbench -T %d` (the second dedup figure in the text).", cfg.pgbenchSec, cfg.shortSec),
		"CPU time of pg_basebackup and pgvault backup is the client's; the server's walsender reads (and for pg_basebackup compresses) the files: that is in `server CPU`. pgBackRest and restic read the files themselves. `server CPU` also includes the checkpointer and the archiver (and so the archive_command's pushes) during the step.",
		"restic's copy of the live data directory holds pg_wal (current and recycled segments), which pgvault's and pgBackRest's restores leave out (recovery fetches the WAL it needs): so restores and mount reads are compared in MB/s, not seconds.",
		"WAL push: the segments are real WAL of this cluster (UPDATEs of 20,000 pgbench_accounts rows at a time, a CHECKPOINT every 10, so they carry full-page images), copied aside by archive_command; each is then pushed once by each tool, as postgres, alternating which goes first. pgBackRest pushes into the stanza's archive (zst), pgvault into a new repository.",
		"`pgvault` runs on the database host as postgres, so `--method auto` reads the data directory itself (method local, between pg_backup_start and pg_backup_stop, as pgBackRest reads it); the bench fails the run if it streamed instead. `pgvault, stream` is a diagnostic, not a peer: the same full backup into a new repository with `--method stream`, the files sent by BASE_BACKUP as pgvault takes them from another machine.",
		fmt.Sprintf("WAL ingest ceiling: two physical slots are created (reserving WAL), the push benchmark's UPDATEs write a backlog of %d MiB, and each receiver then catches it up on its own slot, alternating which goes first: `pgvault wal stream` into a new folder repository until the backlog's last segment is stored, `pg_receivewal` into a local folder (plain segments, fsync per segment), each timed until the backlog's last segment is complete in its store. Catching up, a receiver takes WAL as fast as the server sends it, with no load generator on the same two cores: the rate is its ceiling. Peak RSS is read while it is behind (VmHWM).", cfg.ingestMB),
		"pgBackRest is Debian's 2.45, the newest any registry here serves. pgBackRest 2.46 and later add block incremental backups (`repo-block`: an incremental stores the changed blocks of a file, not the whole file), which this bench cannot run: its pgBackRest incrementals are file-level. restic is 0.18.1, built from the Go proxy by .ci/bench, not Debian's 0.14 of 2022 (at scale 100 the two measured alike: restore 3.69 s with 0.18.1 against 3.59 s with 0.14 in the run before, full backup 12.1 s against 10.4 s).",
		"Every pgvault command ran with PGVAULT_CPUPROFILE set (Go's 100 Hz sampling profiler; its overhead is well under 1%).",
	}
}

// machine describes the host.
func machine() string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(string(data)); len(f) > 1 {
			if kb, err := strconv.Atoi(f[1]); err == nil {
				mem = fmt.Sprintf(", %d GiB RAM", kb>>20)
			}
		}
	}
	kernel, _ := exec.Command("uname", "-r").Output()
	return fmt.Sprintf("%s, %d cores%s, Linux %s", cpu, runtime.NumCPU(), mem, strings.TrimSpace(string(kernel)))
}

func versions() [][2]string {
	first := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return "not available (" + err.Error() + ")"
		}
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	rev := first("git", "-C", moduleRoot, "rev-parse", "--short", "HEAD")
	if out, _ := exec.Command("git", "-C", moduleRoot, "status", "--porcelain", "--untracked-files=no").Output(); len(out) > 0 {
		rev += " with uncommitted changes"
	}
	return [][2]string{
		{"pgvault", "commit " + rev + ", built with " + runtime.Version()},
		{"PostgreSQL", first(filepath.Join(pgtest.BinDir, "postgres"), "--version")},
		{"pg_basebackup", first(filepath.Join(pgtest.BinDir, "pg_basebackup"), "--version")},
		{"pgBackRest", first("pgbackrest", "version")},
		{"restic", first(resticBin(), "version")},
		{"barman", first("barman", "--version")},
		{"pgbench", first(filepath.Join(pgtest.BinDir, "pgbench"), "--version")},
	}
}

// ---- archive_command ----

// setArchive waits for the archiver to catch up, then points
// archive_command at cmd (and reloads).
func (b *bench) setArchive(cmd string) {
	if err := waitArchiveIdle(b.c.DataDir(), 3*time.Minute); err != nil {
		b.note("archiver: %v (switching the command anyway)", err)
	}
	q := "ALTER SYSTEM SET archive_command = '" + strings.ReplaceAll(cmd, "'", "''") + "'"
	if err := sqlExec(b.c.Port(), time.Minute, q); err != nil {
		b.t.Fatalf("set archive_command: %v", err)
	}
	if err := sqlExec(b.c.Port(), time.Minute, "SELECT pg_reload_conf()"); err != nil {
		b.t.Fatalf("reload: %v", err)
	}
	// The reload is asynchronous: once a new session sees the command,
	// the postmaster has reloaded and signalled the archiver, whose latch
	// wakes it to reread the file before it archives again.
	if err := waitUntil(nil, 20*time.Millisecond, time.Minute, func() bool {
		v, err := sqlString(b.c.Port(), "SHOW archive_command")
		return err == nil && v == cmd
	}); err != nil {
		b.t.Fatalf("archive_command after the reload: %v", err)
	}
}

// prepare readies the cluster for a measured step: archive_command for
// the tool, a checkpoint, and a cold page cache.
func (b *bench) prepare(archiveCmd string) {
	b.setArchive(archiveCmd)
	if err := sqlExec(b.c.Port(), 10*time.Minute, "CHECKPOINT"); err != nil {
		b.t.Fatalf("checkpoint: %v", err)
	}
	dropCaches()
}

// settle reads the data directory once, unmeasured, from a cold cache.
// The host takes back the memory a large step like `pgbench -i` used,
// and the first step to fill the page cache again pays for it: before
// this, the first full backup of round 1 (always pgvault's, as the
// rotation starts with it) took 8.9-9.4 s against 5.5-7.4 s in the
// other rounds.
func (b *bench) settle() {
	b.prepare("/bin/true")
	t0 := time.Now()
	n, err := readTree(b.c.DataDir())
	if err != nil {
		b.note("settling read of the data directory: %v", err)
	}
	b.logf("settling read: %.0f MB in %.2fs (unmeasured)", float64(n)/1e6, time.Since(t0).Seconds())
}

// ---- one round ----

func (b *bench) round(r int) {
	b.logf("round %d of %d", r+1, b.cfg.count)
	pv := b.newPgvaultRepo(fmt.Sprintf("pgvault-r%d", r))
	rs := b.newResticRepo()

	// Full backups.
	full := []string{ToolPgvault, ToolBasebackup, ToolPgbackrest, ToolRestic, ToolBarman, ToolPgvaultStream}
	for _, tool := range rotate(full, r) {
		switch tool {
		case ToolPgvault:
			b.pgvaultBackup(pv, StepFull, r)
		case ToolBasebackup:
			b.basebackup()
		case ToolPgbackrest:
			b.pgbackrestBackup(StepFull, "full")
		case ToolRestic:
			b.resticBackup(rs, StepFull)
		case ToolBarman:
			b.barmanBackup()
		case ToolPgvaultStream:
			b.pgvaultStream(r)
		}
	}

	// (a) A contiguous 5% of pgbench_accounts.
	b.setArchive("/bin/true")
	rows := b.cfg.scale * 100000 / 20
	b.logf("UPDATE %d contiguous rows (5%%)", rows)
	if err := sqlExec(b.c.Port(), 30*time.Minute, fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= %d", rows)); err != nil {
		b.t.Fatalf("5%% update: %v", err)
	}
	sqlExec(b.c.Port(), 10*time.Minute, "CHECKPOINT")
	b.incremental(r, pv, rs, StepIncrChange)

	// (b) pgbench -T N, its WAL archived into pgvault's repository, for
	// the synthetic backup of a pgvault backup taken just before it (the
	// steps above archived some WAL into the other tools' archives).
	parent := b.pgvaultParent(pv)
	b.logf("pgbench -T %d", b.cfg.pgbenchSec)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(b.cfg.pgbenchSec+300)*time.Second)
	out := b.c.Pgbench(ctx, b.t, "-T", strconv.Itoa(b.cfg.pgbenchSec))
	cancel()
	if r == 0 {
		b.note("pgbench -T %d in round 1 (WAL archived into pgvault's repository): %s", b.cfg.pgbenchSec, grepLine(out, "tps ="))
	}
	pgbenchEnd := b.endOfWAL()
	b.incremental(r, pv, rs, StepIncrBench)
	if synthetic := b.pgvaultSynthetic(pv, StepIncrBench, r, parent, pgbenchEnd); synthetic != "" {
		for _, tool := range rotate([]string{ToolPgvaultSynthetic, ToolPgvaultParentWAL}, r) {
			if tool == ToolPgvaultSynthetic {
				b.pgvaultRestoreEnd(pv, tool, synthetic, "--to-immediate")
			} else {
				b.pgvaultRestoreEnd(pv, tool, parent, "--to-lsn", pgbenchEnd)
			}
		}
	}

	// Restores of the newest backup of each tool.
	b.setArchive("/bin/true")
	for _, tool := range rotate([]string{ToolPgvault, ToolPgbackrest, ToolRestic, ToolPgvaultMount}, r) {
		switch tool {
		case ToolPgvault:
			b.pgvaultRestore(pv, r)
		case ToolPgbackrest:
			b.pgbackrestRestore()
		case ToolRestic:
			b.resticRestore(rs)
		case ToolPgvaultMount:
			b.pgvaultInstant(pv, r)
		}
	}

	// Cold reads through the mounts.
	for _, tool := range rotate([]string{ToolPgvault, ToolRestic}, r) {
		switch tool {
		case ToolPgvault:
			b.pgvaultBrowse(pv, r)
		case ToolRestic:
			b.resticMount(rs)
		}
	}
	// (c) A shorter pgbench run, pgvault only: what a backup adds after
	// it. Last, so that the restores above restore the third backups.
	b.setArchive("/bin/true")
	b.logf("pgbench -T %d", b.cfg.shortSec)
	ctx, cancel = context.WithTimeout(context.Background(), time.Duration(b.cfg.shortSec+300)*time.Second)
	b.c.Pgbench(ctx, b.t, "-T", strconv.Itoa(b.cfg.shortSec))
	cancel()
	sqlExec(b.c.Port(), 10*time.Minute, "CHECKPOINT")
	b.pgvaultBackup(pv, StepIncrShort, r)

	// (d) A 1% scattered UPDATE, archived into pgvault's repository:
	// pgvault's regular and synthetic backups, pgBackRest's incremental.
	b.setArchive(pv.archiveCmd())
	parent = pv.lastID
	b.logf("UPDATE %d scattered rows (1%%)", b.cfg.scale*100000/100)
	if err := sqlExec(b.c.Port(), 30*time.Minute, "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0"); err != nil {
		b.t.Fatalf("1%% update: %v", err)
	}
	onePctEnd := b.endOfWAL()
	for _, tool := range rotate([]string{ToolPgvault, ToolPgbackrest, ToolPgvaultSynthetic}, r) {
		switch tool {
		case ToolPgvault:
			b.pgvaultBackup(pv, StepIncrOnePct, r)
		case ToolPgbackrest:
			b.pgbackrestBackup(StepIncrOnePct, "incr")
		case ToolPgvaultSynthetic:
			b.setArchive(pv.archiveCmd())
			b.pgvaultSynthetic(pv, StepIncrOnePct, r, parent, onePctEnd)
		}
	}

	os.RemoveAll(pv.dir)
	os.RemoveAll(rs.dir)
}

// pgvaultParent takes a pgvault backup, not measured, with pgvault's
// archive_command on from its start: the parent of a synthetic backup,
// whose WAL from there on is all in pgvault's repository.
func (b *bench) pgvaultParent(pv *pgvaultRepo) string {
	b.prepare(pv.archiveCmd())
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := pgCmd(ctx, pgvaultBin, "--pg", b.c.ReplicationConnString(), "--output", "json", "backup", "--fast-checkpoint")
	cmd.Env = append(cmd.Env, pv.env...)
	b.record("pgvault: the synthetic backup's parent (not measured; archive_command = pgvault wal push %p from here on)", cmd)
	u, err := measure(cmd)
	var rep struct {
		ID string `json:"id"`
	}
	if err == nil {
		err = json.Unmarshal([]byte(u.Stdout), &rep)
	}
	if err != nil || rep.ID == "" {
		b.t.Fatalf("pgvault backup (the synthetic backup's parent): %v: %s", err, u.Stdout)
	}
	pv.lastID = rep.ID
	return rep.ID
}

// endOfWAL returns the server's current WAL position, after a checkpoint
// and a segment switch have put a record after it and sent it to the
// archiver: a synthetic backup to that position finds where to stop.
func (b *bench) endOfWAL() string {
	lsn, err := sqlString(b.c.Port(), "SELECT pg_current_wal_lsn()::text")
	if err != nil {
		b.t.Fatalf("current WAL position: %v", err)
	}
	for _, q := range []string{"CHECKPOINT", "SELECT pg_switch_wal()"} {
		if err := sqlExec(b.c.Port(), 10*time.Minute, q); err != nil {
			b.t.Fatalf("%s: %v", q, err)
		}
	}
	return lsn
}

func (b *bench) incremental(r int, pv *pgvaultRepo, rs *resticRepo, step string) {
	for _, tool := range rotate([]string{ToolPgvault, ToolPgbackrest, ToolRestic}, r) {
		switch tool {
		case ToolPgvault:
			b.pgvaultBackup(pv, step, r)
		case ToolPgbackrest:
			b.pgbackrestBackup(step, "incr")
		case ToolRestic:
			b.resticBackup(rs, step)
		}
	}
}

func grepLine(out, prefix string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), prefix) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// sampleOf turns a command's usage into a sample.
func sampleOf(u usage, serverCPU, mb float64) Sample {
	s := NewSample()
	s.Wall, s.CPU, s.RSSMB, s.ServerCPU, s.MB = u.Wall.Seconds(), u.CPU(), u.MaxRSSMB, serverCPU, mb
	return s
}

// ---- the profile of pgvault's slowest step ----

// profiles2 summarizes the CPU profiles of pgvault's slowest step and of
// the step where pgvault is furthest behind its best peer.
func (b *bench) profiles2() []*Profile {
	var slowest, behind string
	var worst, worstRatio float64
	for _, step := range sortedKeys(b.profiles) {
		st := b.res.Get(step, ToolPgvault).Stat(Wall)
		if !st.OK() {
			continue
		}
		if st.Median > worst {
			slowest, worst = step, st.Median
		}
		if _, m, ok := b.res.BestPeer(step, Wall); ok && m > 0 && st.Median/m > worstRatio {
			behind, worstRatio = step, st.Median/m
		}
	}
	if slowest == "" {
		b.note("no pgvault CPU profile was written")
		return nil
	}
	out := []*Profile{b.profileOf(slowest, "slowest step")}
	if behind != "" && behind != slowest {
		out = append(out, b.profileOf(behind, fmt.Sprintf("step furthest behind its best peer (%.1fx)", worstRatio)))
	}
	return out
}

func (b *bench) profileOf(step, why string) *Profile {
	file := b.profiles[step]
	row := b.res.Get(step, ToolPgvault)
	last := row.Samples[len(row.Samples)-1]
	p := &Profile{Why: why, Step: step, Tool: ToolPgvault, File: filepath.Base(file), Wall: last.Wall, ServerCPU: last.ServerCPU}
	if u, ok := b.lastUsage[step]; ok {
		p.User, p.Sys = u.User.Seconds(), u.Sys.Seconds()
	}
	all, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=100000", pgvaultBin, file).CombinedOutput()
	if err != nil {
		b.note("go tool pprof on %s: %v: %s", file, err, tail(string(all), 3))
		return p
	}
	p.Categories = CategorizeTop(string(all))
	lines := strings.Split(string(all), "\n")
	if len(lines) > 32 {
		lines = lines[:32]
	}
	p.Top = b.generalize(strings.Join(lines, "\n"))
	p.Explanation = explain(p)
	// Keep a copy of the profile for a closer look (go tool pprof -http).
	keep := filepath.Join(os.TempDir(), "pgvault-bench-profiles")
	os.MkdirAll(keep, 0o755)
	if data, err := os.ReadFile(file); err == nil {
		dst := filepath.Join(keep, fmt.Sprintf("%s-scale%d.prof", slug(step), b.cfg.scale))
		if os.WriteFile(dst, data, 0o644) == nil {
			b.note("the CPU profile of pgvault's %s (%s) is kept in %s (open it with the binary of the same commit)", why, step, dst)
		}
	}
	return p
}

func slug(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteRune('-')
		}
	}
	return strings.Trim(b.String(), "-")
}

// explain says in words where the time of the profiled step went.
func explain(p *Profile) string {
	cpu := p.User + p.Sys
	var parts []string
	for i, c := range p.Categories {
		if i == 3 {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.0f%%", c.Name, c.Percent))
	}
	s := fmt.Sprintf("The largest parts of pgvault's CPU time: %s. ", strings.Join(parts, ", "))
	server := p.ServerCPU
	if math.IsNaN(server) {
		server = 0
		s += fmt.Sprintf("Of the %s core-seconds the 2 cores offered during the step, pgvault used %s (PostgreSQL is not involved in this step); the other %s went to waiting (disk, fsync, locks) or to other work on the host. ",
			Num(2*p.Wall), Num(cpu), Num(math.Max(2*p.Wall-cpu, 0)))
	} else {
		s += fmt.Sprintf("Of the %s core-seconds the 2 cores offered during the step, pgvault used %s, PostgreSQL %s, and %s were spent by neither (waiting for the disk and fsync, or other work on the host). ",
			Num(2*p.Wall), Num(cpu), Num(server), Num(math.Max(2*p.Wall-cpu-server, 0)))
	}
	switch {
	case cpu >= 1.6*p.Wall:
		s += "pgvault keeps both cores busy: the step is CPU-bound in pgvault."
	case server > cpu:
		s += "PostgreSQL used more CPU than pgvault: the step waits mostly on the server."
	case cpu >= 0.9*p.Wall:
		s += "pgvault uses about one core: a serial part of pgvault limits the step, not the disk or the server."
	default:
		s += "pgvault uses less than one core and the server is not busy either: most of the wall time is spent waiting (I/O, fsync, a lock, a sleep, or a serial hand-off), which a CPU profile does not show."
	}
	return s
}

// sortedKeys for stable output.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestChartFromDoc draws the chart again from the results table already
// in the document (after a change to the chart's code, without measuring
// again): go test -tags bench -run TestChartFromDoc ./integration/bench/
func TestChartFromDoc(t *testing.T) {
	cfg := loadConfig(t)
	data, err := os.ReadFile(cfg.doc)
	if err != nil {
		t.Fatal(err)
	}
	md := string(data)
	begin := strings.Index(md, "<!-- BEGIN "+SectionName+" -->")
	end := strings.Index(md, "<!-- END "+SectionName+" -->")
	if begin < 0 || end < begin {
		t.Fatalf("%s has no %s section", cfg.doc, SectionName)
	}
	section := md[begin:end]
	scale, runs, date := "?", "?", "?"
	if m := regexp.MustCompile(`Measured (\d{4}-\d\d-\d\d).*pgbench scale (\d+).*?, (\d+) round`).FindStringSubmatch(section); m != nil {
		date, scale, runs = m[1], m[2], m[3]
	}
	png, err := RenderChart(fmt.Sprintf("pgvault vs peers: wall time in seconds, scale %s", scale),
		fmt.Sprintf("median of %s run(s), line = min-max. %s", runs, date), ChartGroups(ParseResultsTable(section), ChartSteps))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.chart, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", cfg.chart)
}

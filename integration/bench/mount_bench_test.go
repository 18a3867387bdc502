//go:build bench

package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// mountConfig is the instant-restore benchmark's environment.
type mountConfig struct {
	scales     []int
	count      int
	pgbenchSec int // pgbench -S -T, measured run
	warmupSec  int // pgbench -S -T, warm-up run
	latencyMS  int // extra delay of every repository request in the remote-repository variant; 0: not run
	doc        string
	reproduce  string
}

func loadMountConfig(t *testing.T) mountConfig {
	c := mountConfig{
		count:      envInt(t, "COUNT", 3),
		pgbenchSec: envInt(t, "MOUNT_PGBENCH_SECONDS", 20),
		warmupSec:  envInt(t, "MOUNT_WARMUP_SECONDS", 20),
		latencyMS:  envInt(t, "MOUNT_LATENCY_MS", 30),
		doc:        os.Getenv("BENCH_DOC"),
	}
	spec := os.Getenv("MOUNT_SCALES")
	if strings.TrimSpace(spec) == "" {
		spec = mountDefaultScale
	}
	for _, f := range strings.Fields(spec) {
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			t.Fatalf("MOUNT_SCALES=%q: want positive integers separated by spaces", spec)
		}
		c.scales = append(c.scales, n)
	}
	sort.Ints(c.scales)
	if c.doc == "" {
		c.doc = filepath.Join(moduleRoot, "docs", "benchmarks.md")
	}
	var names []string
	for _, s := range c.scales {
		names = append(names, strconv.Itoa(s))
	}
	c.reproduce = fmt.Sprintf(`MOUNT_SCALES="%s" COUNT=%d BENCH_GO=0 BENCH_PEERS=0 make bench`, strings.Join(names, " "), c.count)
	return c
}

// TestMountScales is the instant-restore benchmark: at each pgbench scale
// of MOUNT_SCALES, the time to first query from an instant mount against
// pgBackRest's and pgvault's restores, a cold read of the whole backup
// through the browse mount against restore and restic mount, and
// pgbench -S on the instant mount against the original cluster. It writes
// the section "mount-bench" of docs/benchmarks.md.
func TestMountScales(t *testing.T) {
	began, cpu0 := time.Now(), cpuTimes()
	cfg := loadMountConfig(t)
	led, err := openLedger()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(led.remove)
	rep := &MountReport{Date: time.Now(), Machine: machine(), LoadStart: loadAvg(), Count: cfg.count,
		Reproduce: cfg.reproduce, PgbenchSec: cfg.pgbenchSec, WarmupSec: cfg.warmupSec, LatencyMS: cfg.latencyMS, Headline: os.Getenv("BENCH_NOTE")}
	t.Logf("%s scales %v, %d round(s); load average %s", time.Now().Format("15:04:05"), cfg.scales, cfg.count, rep.LoadStart)

	seen := map[string]bool{}
	var commands, notes, configs []string
	for _, scale := range cfg.scales {
		ms := MountScale{Scale: scale, Res: &Results{}}
		t.Run(fmt.Sprintf("scale-%d", scale), func(t *testing.T) {
			b := &bench{t: t, cfg: config{scale: scale, count: cfg.count}, led: led, res: ms.Res, seen: seen,
				profiles: map[string]string{}, lastUsage: map[string]usage{},
				firstQuery: FirstQuery, wantFirst: strconv.Itoa(scale), mountDetail: true}
			defer func() {
				commands = append(commands, b.commands...)
				for _, n := range b.notes {
					notes = append(notes, fmt.Sprintf("Scale %d: %s", scale, n))
				}
				if configs == nil {
					configs = b.configs
				}
			}()
			b.mountScale(&ms, cfg)
		})
		rep.Scales = append(rep.Scales, ms)
	}

	rep.Goals = EvaluateMountGoals(rep.Scales)
	rep.Versions = mountVersions()
	rep.Commands = append(commands, configs...)
	rep.Notes = append(notes, mountNotes(cfg)...)
	rep.LoadEnd = loadAvg()
	rep.StealPct = StealPct(cpu0, cpuTimes())
	rep.Runtime = time.Since(began)
	if t.Failed() {
		t.Logf("a scale failed: %s is left as it was", cfg.doc)
		return
	}
	if err := ReplaceSection(cfg.doc, MountSectionName, rep.Render()); err != nil {
		t.Fatalf("write %s: %v", cfg.doc, err)
	}
	t.Logf("%s wrote the %s section of %s (%s)", time.Now().Format("15:04:05"), MountSectionName, cfg.doc, rep.Runtime.Round(time.Second))
	for _, g := range rep.Goals {
		t.Logf("%s goal %s: %s (%s)", time.Now().Format("15:04:05"), g.Name, g.Status, g.Detail)
	}
}

// mountScale runs every round at one scale: a new cluster, pgbench -i,
// one backup by each of pgvault, pgBackRest and restic, then COUNT
// rounds of the measurements.
func (b *bench) mountScale(ms *MountScale, cfg mountConfig) {
	scale := ms.Scale
	ms.DataDirMB = b.setUpCluster(scale)
	b.logf("scale %d: data directory %.0f MB", scale, ms.DataDirMB)

	// One backup per tool, each waiting for its own archiver.
	b.pgbr = b.setupPgbackrest()
	pv := b.newPgvaultRepo("pgvault")
	rs := b.newResticRepo()
	b.pgvaultBackup(pv, StepFull, 0)
	b.pgbackrestBackup(StepFull, "full")
	b.resticBackup(rs, StepFull)
	b.setArchive("/bin/true")
	if !b.res.Get(StepFull, ToolPgvault).Stat(Wall).OK() {
		b.t.Fatalf("scale %d: the pgvault backup failed, nothing to mount", scale)
	}

	for r := 0; r < cfg.count; r++ {
		b.logf("scale %d: round %d of %d", scale, r+1, cfg.count)
		tools := []string{ToolPgvaultMount, ToolPgvault, ToolPgbackrest}
		if cfg.latencyMS > 0 {
			tools = append(tools, ToolPgvaultMountRemote)
		}
		for _, tool := range rotate(tools, r) {
			switch tool {
			case ToolPgvaultMount:
				b.pgvaultInstant(pv, r)
			case ToolPgvaultMountRemote:
				b.pgvaultInstantRemote(pv, cfg.latencyMS)
			case ToolPgvault:
				b.pgvaultRestore(pv, r)
			case ToolPgbackrest:
				b.pgbackrestRestore()
			}
		}
		for _, tool := range rotate([]string{ToolPgvault, ToolPgbackrest}, r) {
			switch tool {
			case ToolPgvault:
				b.pgvaultDumpTable(pv, pv.lastID)
			case ToolPgbackrest:
				b.pgbackrestDumpTable()
			}
		}
		for _, tool := range rotate([]string{ToolPgvault, ToolRestic}, r) {
			switch tool {
			case ToolPgvault:
				b.pgvaultBrowse(pv, r)
			case ToolRestic:
				b.resticMount(rs)
			}
		}
		for _, tool := range rotate([]string{ToolPgvaultMount, ToolNative}, r) {
			switch tool {
			case ToolPgvaultMount:
				b.instantSelect(pv, cfg)
			case ToolNative:
				b.nativeSelect(cfg)
			}
		}
	}
}

// setUpCluster makes the benchmark's work folder and a new cluster
// (archive_mode on, archive_command /bin/true until a backup sets its
// own) with pgbench's tables at scale, checkpointed. It returns the data
// directory's size, MB.
func (b *bench) setUpCluster(scale int) float64 {
	b.work = pgtest.TempDir(b.t)
	b.profDir = filepath.Join(b.work, "profiles")
	os.Mkdir(b.profDir, 0o755)
	ownByPostgres(b.t, b.profDir)

	b.c = pgtest.Start(b.t, pgtest.Options{Settings: map[string]string{
		"archive_mode":    "on",
		"archive_command": "/bin/true",
	}})
	b.logf("scale %d: pgbench -i", scale)
	b.pgbenchInit(scale)
	b.c.Checkpoint(b.t)
	return treeMB(b.c.DataDir())
}

// pgbenchInit creates pgbench's tables (with a longer timeout than
// pgtest's: scale 300 takes minutes).
func (b *bench) pgbenchInit(scale int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	cmd := rootCmd(ctx, filepath.Join(pgtest.BinDir, "pgbench"), "-h", "127.0.0.1", "-p", strconv.Itoa(b.c.Port()), "-U", "postgres",
		"-i", "-s", strconv.Itoa(scale), "-q", "postgres")
	b.recordLine("pgbench: create the tables of the original cluster (a client over TCP), at each scale",
		strings.Replace(strings.Join(quoteArgs(cmd.Args), " "), " -s "+strconv.Itoa(scale)+" ", " -s $SCALE ", 1))
	u, err := measure(cmd)
	if err != nil {
		b.t.Fatalf("pgbench -i -s %d: %v", scale, err)
	}
	s := NewSample()
	s.Wall = u.Wall.Seconds()
	b.res.Add(StepPgbenchInit, ToolNative, s)
	b.logf("pgbench -i -s %d: %.0fs", scale, u.Wall.Seconds())
}

// instantSelect mounts the backup in instant mode (cold page cache),
// starts PostgreSQL on it, waits until it has promoted, then runs the
// warm-up and the measured pgbench -S.
func (b *bench) instantSelect(pv *pgvaultRepo, cfg mountConfig) {
	dropCaches()
	in, err := b.mountInstant(pv, "")
	if err != nil {
		b.fail(StepSelectTPS, ToolPgvaultMount, err)
		return
	}
	srv, _, err := b.startServer(in.mnt)
	if err != nil {
		in.close(b, 30*time.Second)
		b.fail(StepSelectTPS, ToolPgvaultMount, err)
		return
	}
	defer func() {
		srv.stop()
		in.close(b, 60*time.Second)
	}()
	if err := waitPromoted(srv.port, 10*time.Minute); err != nil {
		b.fail(StepSelectTPS, ToolPgvaultMount, err)
		return
	}
	s := NewSample()
	s.Wall = time.Since(in.start).Seconds()
	b.res.Add(StepPromoted, ToolPgvaultMount, s)
	if err := b.selectRuns(ToolPgvaultMount, srv.port, cfg); err != nil {
		b.fail(StepSelectTPS, ToolPgvaultMount, err)
	}
}

// nativeSelect runs the same pgbench -S on the original cluster, after
// dropping the page cache.
func (b *bench) nativeSelect(cfg mountConfig) {
	dropCaches()
	if err := b.selectRuns(ToolNative, b.c.Port(), cfg); err != nil {
		b.fail(StepSelectTPS, ToolNative, err)
	}
}

// selectRuns runs pgbench -S -c 2 twice against the server at port: a
// warm-up run and the measured run; it records the TPS of both.
func (b *bench) selectRuns(tool string, port int, cfg mountConfig) error {
	for _, run := range []struct {
		step string
		sec  int
	}{{StepSelectWarmup, cfg.warmupSec}, {StepSelectTPS, cfg.pgbenchSec}} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(run.sec)*time.Second+5*time.Minute)
		cmd := rootCmd(ctx, filepath.Join(pgtest.BinDir, "pgbench"), "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres",
			"-S", "-c", "2", "-T", strconv.Itoa(run.sec), "postgres")
		if run.step == StepSelectTPS {
			b.recordLine("pgbench -S on the original cluster and on the instant mount's server (a client over TCP), after a warm-up run of the same command with -T "+strconv.Itoa(cfg.warmupSec),
				strings.ReplaceAll(strings.Join(quoteArgs(cmd.Args), " "), "-p "+strconv.Itoa(port)+" ", "-p $PORT "))
		}
		u, err := measure(cmd)
		cancel()
		if err != nil {
			return err
		}
		tps, err := parseTPS(u.Stdout)
		if err != nil {
			return err
		}
		s := NewSample()
		s.Wall, s.CPU, s.TPS = u.Wall.Seconds(), u.CPU(), tps
		b.res.Add(run.step, tool, s)
		b.logf("%s, %s: %.0f TPS", tool, run.step, tps)
	}
	return nil
}

// parseTPS reads "tps = 12345.678 (without initial connection time)".
func parseTPS(out string) (float64, error) {
	line := grepLine(out, "tps =")
	f := strings.Fields(line)
	if len(f) < 3 {
		return 0, fmt.Errorf("no tps line in pgbench's output: %s", tail(out, 5))
	}
	return strconv.ParseFloat(f[2], 64)
}

// waitPromoted waits until the server at port has left recovery.
func waitPromoted(port int, timeout time.Duration) error {
	var v string
	var err error
	if waitUntil(nil, 20*time.Millisecond, timeout, func() bool {
		v, err = sqlString(port, "SELECT pg_is_in_recovery()::text")
		return err == nil && v == "false"
	}) != nil {
		return fmt.Errorf("still in recovery after %v (%q, %v)", timeout, v, err)
	}
	return nil
}

// mountVersions are the programs the instant-restore benchmark runs.
func mountVersions() [][2]string {
	var out [][2]string
	for _, v := range versions() {
		switch v[0] {
		case "pgvault", "PostgreSQL", "pgBackRest", "restic", "pgbench":
			out = append(out, v)
		}
	}
	return out
}

// mountNotes are caveats true of every run.
func mountNotes(cfg mountConfig) []string {
	return []string{
		"Each scale has its own cluster (initdb, then `pgbench -i`, then CHECKPOINT) and one backup by each tool, made once: pgvault's with archive_command = `pgvault wal push %p`, pgBackRest's full backup with archive_command = `pgbackrest archive-push %p` (its stanza created and checked first, the configuration below), restic's of the checkpointed live data directory; then archive_command = /bin/true. Only restores, mounts and pgbench runs are repeated.",
		"The instant mount is `pgvault mount MNT --backup latest --to-immediate --scratch DIR` with the default owner (postgres) and defaults otherwise (`--cache-size 512MiB`, `--prefetch 16`, `--readahead 1024`); `--to-immediate` so that all three paths recover to the same point (consistency) and promote, as `pgvault restore --to-immediate --target-action promote` and `pgbackrest restore --type=immediate --target-action=promote` do. Each run uses a new mount point and a new scratch folder.",
		"Before every mount, restore and pgbench -S pair: sync and `echo 3 > /proc/sys/vm/drop_caches`. The three time-to-first-query paths run in a rotated order each round, then the two mount reads, then the two pgbench -S measurements, so drift on the host hits all alike.",
		"Time to first query counts from the start of the mount or restore command; the PostgreSQL server is started with `pg_ctl start --no-wait` (archive_mode=off, its own port and socket folder), then the benchmark connects and tries the query every 10 ms until it answers (pg_ctl's own wait looks only every 100 ms) (and checks that it counts one row per scale unit).",
		fmt.Sprintf("pgbench -S: the instant mount's server runs alongside the idle original cluster; it is measured once promoted (`pg_is_in_recovery()` false), on a mount made after dropping the page cache. Both clusters have the same settings (initdb defaults, shared_buffers 128MB) except archive_mode. pgbench's own VACUUM of pgbench_branches and pgbench_tellers runs before each run, on the mount through the overlay. Warm-up %d s, measured %d s.", cfg.warmupSec, cfg.pgbenchSec),
		fmt.Sprintf("The remote-repository row (MOUNT_LATENCY_MS=%d) is the same instant mount of the same repository with PGVAULT_TEST_FAULTS=seed=1,latency=1,latency_ms=%d: pgvault's test fault backend delays every request to the repository (load, list, stat) by %d ms and injects nothing else, as a store a round trip away would. It has no peer and no goal; it shows how many requests the path to the first query waits for one after another.", cfg.latencyMS, cfg.latencyMS, cfg.latencyMS),
		"pgvault's and restic's repositories are encrypted (AES-256-GCM); pgBackRest's is not (no repo cipher), all three compress with zstd. Every repository is a folder on the same disk as the data.",
		"Nothing else was stopped on the host while measuring: the load averages at the start and end are above.",
	}
}

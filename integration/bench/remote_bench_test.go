//go:build bench

package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/minio"
	"github.com/pgvault/pgvault/integration/pgtest"
)

// remoteConfig is the remote instant-restore benchmark's environment.
type remoteConfig struct {
	scale, count int
	seconds      int // pgbench -T
	window       int // pgbench -P
	clients      int // pgbench -c
	latencyMS    int
	profiles     string // REMOTE_PROFILES: a folder for the mounts' CPU profiles
	doc          string
	reproduce    string
}

func loadRemoteConfig(t *testing.T) remoteConfig {
	c := remoteConfig{
		scale:     envInt(t, "REMOTE_SCALE", remoteDefaultScale),
		count:     envInt(t, "COUNT", 3),
		seconds:   envInt(t, "REMOTE_SECONDS", 60),
		window:    5,
		clients:   2,
		latencyMS: envInt(t, "REMOTE_LATENCY_MS", 30),
		profiles:  os.Getenv("REMOTE_PROFILES"),
		doc:       os.Getenv("BENCH_DOC"),
	}
	if c.latencyMS <= 0 {
		t.Fatalf("REMOTE_LATENCY_MS=%d: the slower S3 run needs a positive latency", c.latencyMS)
	}
	if c.doc == "" {
		c.doc = filepath.Join(moduleRoot, "docs", "benchmarks.md")
	}
	c.reproduce = fmt.Sprintf("REMOTE_SCALE=%d COUNT=%d BENCH_GO=0 BENCH_PEERS=0 BENCH_MOUNT=0 BENCH_STORES=0 make bench", c.scale, c.count)
	return c
}

// TestRemoteMount is the remote instant-restore benchmark: one pgbench
// cluster backed up into a file repository and into S3 (MinIO on
// loopback); then, every round, pgbench -S's TPS over its first minute
// on the original cluster restarted cold, and on a server started on an
// instant mount of the backup (cold page cache, empty local cache) from
// the file repository, from S3, and from S3 with every request
// REMOTE_LATENCY_MS slower. It writes the section "remote-mount-bench" of
// docs/benchmarks.md.
func TestRemoteMount(t *testing.T) {
	began, cpu0 := time.Now(), cpuTimes()
	cfg := loadRemoteConfig(t)
	led, err := openLedger()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(led.remove)
	rep := &RemoteReport{Date: time.Now(), Machine: machine(), LoadStart: loadAvg(), Scale: cfg.scale, Count: cfg.count,
		Seconds: cfg.seconds, WindowSec: cfg.window, Clients: cfg.clients, LatencyMS: cfg.latencyMS,
		Runs: map[string][]RemoteRun{}, Reproduce: cfg.reproduce, Headline: os.Getenv("BENCH_NOTE")}
	b := &bench{t: t, cfg: config{scale: cfg.scale, count: cfg.count}, led: led, res: &Results{}, seen: map[string]bool{},
		profiles: map[string]string{}, lastUsage: map[string]usage{},
		firstQuery: FirstQuery, wantFirst: strconv.Itoa(cfg.scale)}
	b.logf("scale %d, %d round(s); load average %s", cfg.scale, cfg.count, rep.LoadStart)

	rep.DataDirMB = b.setUpCluster(cfg.scale)
	b.logf("data directory %.0f MB", rep.DataDirMB)
	file := b.newPgvaultRepo("pgvault-file")
	srv := minio.Start(t)
	s3, err := b.newPgvaultRepoAt("pgvault-s3", srv.URL("pgvault-s3"), srv.Env(),
		"pgvault: create the repository on S3 (MinIO on loopback), as postgres; the store's variables in the environment: "+envNames(srv.Env()))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.writeArchiveScript(s3); err != nil {
		t.Fatal(err)
	}
	b.settle()
	for _, pv := range []*pgvaultRepo{file, s3} {
		b.pgvaultBackup(pv, StepFull, 0)
		if pv.lastID == "" {
			t.Fatalf("the backup into %s failed: nothing to mount", pv.repo)
		}
	}
	rep.StoredMB = b.res.Get(StepFull, ToolPgvault).Stat(MB).Max
	b.setArchive("/bin/true")

	slow := fmt.Sprintf("PGVAULT_TEST_FAULTS=seed=1,latency=1,latency_ms=%d", cfg.latencyMS)
	for r := 0; r < cfg.count; r++ {
		b.logf("round %d of %d", r+1, cfg.count)
		for _, run := range rotate(RemoteOrder, r) {
			var res RemoteRun
			switch run {
			case RemoteOriginal:
				res = b.remoteOriginal(cfg)
			case RemoteFile:
				res = b.remoteMount(file, cfg, cfg.profile(run, r))
			case RemoteS3:
				res = b.remoteMount(s3, cfg, cfg.profile(run, r))
			case RemoteS3Slow:
				res = b.remoteMount(s3, cfg, cfg.profile(run, r), slow)
			}
			if res.Err != "" {
				t.Errorf("%s: %s", rep.label(run), res.Err)
			}
			rep.Runs[run] = append(rep.Runs[run], res)
			b.logf("%s: first query %s s, TPS by %d s: %v", rep.label(run), Num(res.FirstQuery), cfg.window, res.Windows)
		}
	}

	rep.Versions = remoteVersions()
	rep.Commands = b.commands
	rep.Notes = append(b.notes, remoteNotes(cfg)...)
	rep.LoadEnd = loadAvg()
	rep.StealPct = StealPct(cpu0, cpuTimes())
	rep.Runtime = time.Since(began)
	if t.Failed() {
		t.Logf("the benchmark failed: %s is left as it was", cfg.doc)
		return
	}
	if err := ReplaceSection(cfg.doc, RemoteSectionName, rep.Render()); err != nil {
		t.Fatalf("write %s: %v", cfg.doc, err)
	}
	b.logf("wrote the %s section of %s (%s)", RemoteSectionName, cfg.doc, rep.Runtime.Round(time.Second))
	for _, g := range rep.Goals() {
		b.logf("goal %s: %s (%s)", g.Name, g.Status, g.Detail)
	}
}

// remoteOriginal restarts the original cluster (empty shared buffers),
// drops the page cache and runs pgbench -S on it.
func (b *bench) remoteOriginal(cfg remoteConfig) RemoteRun {
	b.c.Stop(b.t, "fast")
	dropCaches()
	b.c.Start(b.t)
	tps, err := b.progressRun(b.c.Port(), cfg)
	if err != nil {
		return RemoteRun{Err: oneLine(err)}
	}
	return RemoteRun{FirstQuery: NaN(), Windows: tps}
}

// profile is where round r's mount of run writes its CPU profile, ""
// when REMOTE_PROFILES is not set.
func (c remoteConfig) profile(run string, r int) string {
	if c.profiles == "" {
		return ""
	}
	return filepath.Join(c.profiles, fmt.Sprintf("%s-r%d.prof", slug(run), r+1))
}

// remoteMount drops the page cache, mounts pv's backup in instant mode
// with a new, empty local cache (env added to the mount's environment;
// its CPU profile written to prof unless that is empty),
// starts a server on it, and once it answered and left recovery, runs
// pgbench -S on it.
func (b *bench) remoteMount(pv *pgvaultRepo, cfg remoteConfig, prof string, env ...string) RemoteRun {
	dropCaches()
	in, err := b.mountInstant(pv, prof, env...)
	if err != nil {
		return RemoteRun{Err: oneLine(err)}
	}
	defer in.close(b, time.Minute)
	srv, _, err := b.startServer(in.mnt)
	if err != nil {
		return RemoteRun{Err: oneLine(err)}
	}
	defer srv.stop()
	first := time.Since(in.start).Seconds()
	if err := waitPromoted(srv.port, 10*time.Minute); err != nil {
		return RemoteRun{Err: oneLine(err)}
	}
	tps, err := b.progressRun(srv.port, cfg)
	if err != nil {
		return RemoteRun{Err: oneLine(err)}
	}
	return RemoteRun{FirstQuery: first, Windows: tps}
}

// progressRun runs pgbench -S with a progress report every window and
// returns each window's TPS.
func (b *bench) progressRun(port int, cfg remoteConfig) ([]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.seconds)*time.Second+5*time.Minute)
	defer cancel()
	cmd := rootCmd(ctx, filepath.Join(pgtest.BinDir, "pgbench"), "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres",
		"-S", "-c", strconv.Itoa(cfg.clients), "-T", strconv.Itoa(cfg.seconds), "-P", strconv.Itoa(cfg.window), "postgres")
	b.recordLine("pgbench -S on the original cluster and on each instant mount's server (a client over TCP), with a progress line every window",
		strings.ReplaceAll(strings.Join(quoteArgs(cmd.Args), " "), "-p "+strconv.Itoa(port)+" ", "-p $PORT "))
	u, err := measure(cmd)
	if err != nil {
		return nil, err
	}
	tps := ParseProgress(u.Stdout + "\n" + u.Stderr)
	if want := cfg.seconds / cfg.window; len(tps) < want {
		return nil, fmt.Errorf("pgbench reported %d progress windows, want %d: %s", len(tps), want, tail(u.Stderr, 5))
	}
	return tps[:cfg.seconds/cfg.window], nil
}

// remoteVersions are the programs the remote benchmark runs.
func remoteVersions() [][2]string {
	var out [][2]string
	for _, v := range versions() {
		switch v[0] {
		case "pgvault", "PostgreSQL", "pgbench":
			out = append(out, v)
		}
	}
	return append(out, [2]string{"MinIO", "Go module github.com/minio/minio " + minio.Version})
}

// remoteNotes are caveats true of every run.
func remoteNotes(cfg remoteConfig) []string {
	return []string{
		"One cluster (initdb defaults, shared_buffers 128MB; `pgbench -i`, CHECKPOINT), backed up once into a file repository and once into a repository on MinIO, both encrypted, each backup's WAL archived into its own repository.",
		"Every round runs the four rows in an order rotated every round. The original cluster is stopped, the page cache dropped, and it is started again before its run. Each instant mount runs as root with a new, empty local cache folder (no index tables, no derived key cached), after sync and `echo 3 > /proc/sys/vm/drop_caches`; MinIO's files are on the same disk, so it reads them cold too.",
		fmt.Sprintf("The slower S3 row is the same mount of the same repository with PGVAULT_TEST_FAULTS=seed=1,latency=1,latency_ms=%d: pgvault's test fault backend delays every request to the store (load, list, stat) by %d ms and injects nothing else, as a bucket a region away would; requests in flight at once are each delayed, not queued.", cfg.latencyMS, cfg.latencyMS),
		"pgbench starts once the server on the mount answered its first query and left recovery (the mount recovers to the backup's consistency point and promotes); pgbench's own VACUUM of pgbench_branches and pgbench_tellers runs before its clock starts.",
		"The goals compare the mean TPS from the 10th second to the end (the mean of those windows' medians over the rounds) with the original cluster's over the same seconds; the original cluster also starts cold, so its first windows read from disk, and its TPS jumps when its page cache holds the hot pages, which is why a single window is shown beside the goal but not judged.",
		"Nothing else was stopped on the host while measuring: the load averages at the start and end are above.",
	}
}

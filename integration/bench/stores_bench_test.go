//go:build bench

package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/azurite"
	"github.com/pgvault/pgvault/integration/fakegcs"
	"github.com/pgvault/pgvault/integration/minio"
	"github.com/pgvault/pgvault/integration/pgtest"
	"github.com/pgvault/pgvault/integration/sshd"
	"github.com/pgvault/pgvault/integration/swiftaio"
)

// storeConfig is the per-store benchmark's environment.
type storeConfig struct {
	scale, count int
	doc          string
	reproduce    string
}

func loadStoreConfig(t *testing.T) storeConfig {
	c := storeConfig{
		scale: envInt(t, "STORE_SCALE", storeDefaultScale),
		count: envInt(t, "COUNT", 3),
		doc:   os.Getenv("BENCH_DOC"),
	}
	if c.doc == "" {
		c.doc = filepath.Join(moduleRoot, "docs", "benchmarks.md")
	}
	c.reproduce = fmt.Sprintf("STORE_SCALE=%d COUNT=%d BENCH_GO=0 BENCH_PEERS=0 BENCH_MOUNT=0 make bench", c.scale, c.count)
	return c
}

// TestStores is the per-store benchmark: on one pgbench cluster, for
// every store a repository can live on (each served on loopback by the
// server the integration tests use), a full backup into a new
// repository, a restore of it and the instant mount's time to first
// query. It writes the section "store-bench" of docs/benchmarks.md.
func TestStores(t *testing.T) {
	began, cpu0 := time.Now(), cpuTimes()
	cfg := loadStoreConfig(t)
	led, err := openLedger()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(led.remove)
	rep := &StoreReport{Date: time.Now(), Machine: machine(), LoadStart: loadAvg(), Scale: cfg.scale, Count: cfg.count,
		Reproduce: cfg.reproduce, Headline: os.Getenv("BENCH_NOTE")}
	b := &bench{t: t, cfg: config{scale: cfg.scale, count: cfg.count}, led: led, res: &Results{}, seen: map[string]bool{},
		profiles: map[string]string{}, lastUsage: map[string]usage{},
		firstQuery: FirstQuery, wantFirst: strconv.Itoa(cfg.scale), mountDetail: true}
	b.logf("scale %d, %d round(s); load average %s", cfg.scale, cfg.count, rep.LoadStart)

	rep.DataDirMB = b.setUpCluster(cfg.scale)
	b.logf("data directory %.0f MB", rep.DataDirMB)
	stores := b.startStores()
	b.settle()
	for r := 0; r < cfg.count; r++ {
		b.storeRound(stores, r)
	}

	for _, s := range stores {
		rep.Stores = append(rep.Stores, *s.run)
	}
	rep.Versions = storeVersions()
	rep.Commands = b.commands
	rep.Notes = append(b.notes, storeNotes(stores)...)
	rep.LoadEnd = loadAvg()
	rep.StealPct = StealPct(cpu0, cpuTimes())
	rep.Runtime = time.Since(began)
	if t.Failed() {
		t.Logf("the benchmark failed: %s is left as it was", cfg.doc)
		return
	}
	if err := ReplaceSection(cfg.doc, StoreSectionName, rep.Render()); err != nil {
		t.Fatalf("write %s: %v", cfg.doc, err)
	}
	b.logf("wrote the %s section of %s (%s)", StoreSectionName, cfg.doc, rep.Runtime.Round(time.Second))
	for _, sr := range rep.Stores {
		b.logf("%s", storeSummary(sr))
	}
}

// storeSummary is one store's medians, for the log.
func storeSummary(sr StoreRun) string {
	if !sr.Ran() {
		return fmt.Sprintf("%s: server did not start: %s", sr.Store, sr.StartErr)
	}
	med := func(step, tool string) string { return cell(sr.Res.Get(step, tool).Stat(Wall)) }
	return fmt.Sprintf("%s: backup %s s, restore %s s, instant mount to first query %s s", sr.Store,
		med(StepFull, ToolPgvault), med(StepRestore, ToolPgvault), med(StepFirstQuery, ToolPgvaultMount))
}

// ---- the stores and their servers ----

// storeTarget is how to make a repository on a running store.
type storeTarget struct {
	// url is a new repository's URL for a name; "" for the file store,
	// whose repository is a folder beside its password and cache.
	url func(name string) string
	env []string // the store's credentials, for every pgvault command
}

// storeDef is one store of the benchmark: start brings its server up
// under t (whose end stops it), as the integration tests do.
type storeDef struct {
	store, server string
	start         func(t testing.TB) storeTarget
}

// storeDefs are the stores, in StoreOrder.
func storeDefs() []storeDef {
	return []storeDef{
		{StoreFile, "none: a folder on the same disk", func(testing.TB) storeTarget {
			return storeTarget{url: func(string) string { return "" }}
		}},
		{StoreS3, "MinIO", func(t testing.TB) storeTarget {
			srv := minio.Start(t)
			return storeTarget{url: srv.URL, env: srv.Env()}
		}},
		{StoreSFTP, "OpenSSH sshd, internal-sftp", startSFTP},
		{StoreGCS, "fake-gcs-server", func(t testing.TB) storeTarget {
			srv := fakegcs.Start(t)
			return storeTarget{url: srv.URL, env: srv.Env()}
		}},
		{StoreAzure, "Azurite", func(t testing.TB) storeTarget {
			srv := azurite.Start(t)
			return storeTarget{url: srv.URL, env: srv.Env()}
		}},
		{StoreSwift, "Swift all-in-one: proxy, account, container and object servers", func(t testing.TB) storeTarget {
			srv := swiftaio.Start(t)
			return storeTarget{url: srv.URL, env: srv.Env()}
		}},
	}
}

// startSFTP starts sshd. pgvault's backup and restore run as postgres,
// and the server's client key and known_hosts are root's files (0600):
// the repository URLs name postgres's copies of them.
func startSFTP(t testing.TB) storeTarget {
	srv := sshd.Start(t)
	keys := pgtest.TempDir(t)
	repos := t.TempDir() // sshd logs in as root: its folders will do
	return storeTarget{url: func(name string) string {
		u, err := srv.URLForUser(filepath.Join(repos, name), keys, "postgres")
		if err != nil {
			t.Fatalf("sftp repository URL: %v", err)
		}
		return u
	}}
}

// storeUnderTest is a store in the benchmark: its results, how to make a
// repository on it, and the current round's repository.
type storeUnderTest struct {
	run    *StoreRun
	target storeTarget
	pv     *pgvaultRepo // nil when this round's repository could not be made
}

// backedUp reports whether this round's backup into the store succeeded.
func (s *storeUnderTest) backedUp() bool { return s.pv != nil && s.pv.lastID != "" }

// startStores starts every store's server, one after the other. A server
// that does not start is recorded as such and its store left out of the
// rounds: the report says so in its row.
func (b *bench) startStores() []*storeUnderTest {
	var out []*storeUnderTest
	for _, def := range storeDefs() {
		s := &storeUnderTest{run: &StoreRun{Store: def.store, Server: def.server, Res: &Results{}}}
		t0 := time.Now()
		target, err := tryStart(b.t, def.start)
		if err != nil {
			s.run.StartErr = oneLine(err)
			b.t.Logf("note: %s: the server (%s) did not start: %s", def.store, def.server, s.run.StartErr)
		} else {
			s.target = target
			b.logf("%s store ready in %.1fs (%s)", def.store, time.Since(t0).Seconds(), def.server)
		}
		out = append(out, s)
	}
	return out
}

// ---- one round ----

// storeRound takes a full backup into a new repository on every store
// that runs, then restores each, then times each instant mount to the
// first query; each group in an order rotated every round, so drift on
// the host hits every store alike.
func (b *bench) storeRound(stores []*storeUnderTest, r int) {
	b.logf("round %d of %d", r+1, b.cfg.count)
	var running []*storeUnderTest
	for _, s := range stores {
		if s.run.Ran() {
			running = append(running, s)
		}
	}
	order := rotate(running, r)
	for _, s := range order {
		b.storeBackup(s, r)
	}
	// Restores and mounts leave the cluster alone: nothing should push
	// WAL into a store meanwhile.
	b.setArchive("/bin/true")
	for _, s := range order {
		b.storeRestore(s, r)
	}
	for _, s := range order {
		b.storeMount(s, r)
	}
	for _, s := range order {
		if s.pv != nil {
			os.RemoveAll(s.pv.dir) // the file store's repository, every store's caches
		}
	}
}

// storeBackup creates round r's repository on the store and takes a full
// backup into it, its WAL archived into it too.
func (b *bench) storeBackup(s *storeUnderTest, r int) {
	b.res = s.run.Res
	s.pv = nil
	b.logf("%s: full backup into a new repository", s.run.Store)
	pv, err := b.newStoreRepo(s, r)
	if err != nil {
		b.fail(StepFull, ToolPgvault, err)
		return
	}
	s.pv = pv
	b.pgvaultBackup(pv, StepFull, r)
}

// storeRestore restores round r's backup into a new folder.
func (b *bench) storeRestore(s *storeUnderTest, r int) {
	b.res = s.run.Res
	if !s.backedUp() {
		b.res.Fail(StepRestore, ToolPgvault, "no backup in this round")
		return
	}
	b.logf("%s: restore", s.run.Store)
	if target, _, ok := b.pgvaultCopyOut(s.pv, b.profFile(StepRestore, r)); ok {
		os.RemoveAll(target)
	}
}

// storeMount times an instant mount of round r's backup to the first
// query.
func (b *bench) storeMount(s *storeUnderTest, r int) {
	b.res = s.run.Res
	if !s.backedUp() {
		b.res.Fail(StepFirstQuery, ToolPgvaultMount, "no backup in this round")
		return
	}
	b.logf("%s: instant mount to first query", s.run.Store)
	b.pgvaultInstant(s.pv, r)
}

// newStoreRepo creates round r's repository on the store, with an
// archive_command that pushes into it.
func (b *bench) newStoreRepo(s *storeUnderTest, r int) (*pgvaultRepo, error) {
	name := fmt.Sprintf("%s-r%d", s.run.Store, r+1)
	what := fmt.Sprintf("pgvault: create the repository on the %s store (server: %s), as postgres; the store's variables in the environment: %s",
		s.run.Store, s.run.Server, envNames(s.target.env))
	pv, err := b.newPgvaultRepoAt(name, s.target.url(name), s.target.env, what)
	if err != nil {
		return nil, err
	}
	if err := b.writeArchiveScript(pv); err != nil {
		return nil, err
	}
	return pv, nil
}

// writeArchiveScript writes the repository's archive_command as a script
// in its folder: the repository's variables and the store's credentials
// inline in archive_command would need quoting for both the shell and
// PostgreSQL's % escapes (the URLs hold & and %2F), and would show the
// credentials in pg_settings. Every store, the file store too, archives
// through such a script, so they pay for it alike.
func (b *bench) writeArchiveScript(pv *pgvaultRepo) error {
	var sh strings.Builder
	sh.WriteString("#!/bin/sh\n")
	for _, kv := range pv.env {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&sh, "export %s=%s\n", k, shellQuote(v))
	}
	fmt.Fprintf(&sh, "exec %s wal push \"$1\"\n", shellQuote(pgvaultBin))
	path := filepath.Join(pv.dir, "archive-command")
	if err := os.WriteFile(path, []byte(sh.String()), 0o700); err != nil {
		return fmt.Errorf("write the archive_command script: %w", err)
	}
	ownByPostgres(b.t, path)
	pv.archive = path + " %p"
	b.recordLine("archive_command during each store's backup: a script (run by PostgreSQL as postgres) that exports PGVAULT_REPO, PGVAULT_PASSWORD_FILE, PGVAULT_CACHE_DIR and the store's variables of that repository, then runs",
		`pgvault wal push "$1"`)
	return nil
}

// shellQuote quotes s for sh, always.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// envNames lists the variables of env without their values (which may
// be secrets).
func envNames(env []string) string {
	if len(env) == 0 {
		return "none"
	}
	var names []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		names = append(names, k)
	}
	return strings.Join(names, ", ")
}

// ---- the report's fixed parts ----

// storeVersions are the programs the per-store benchmark runs.
func storeVersions() [][2]string {
	var out [][2]string
	for _, v := range versions() {
		switch v[0] {
		case "pgvault", "PostgreSQL", "pgbench":
			out = append(out, v)
		}
	}
	deb := func(pkg string) string {
		v, err := exec.Command("dpkg-query", "-W", "-f=${Version}", pkg).Output()
		if err != nil {
			return "not available (" + err.Error() + ")"
		}
		return "Debian " + pkg + " " + string(v)
	}
	return append(out,
		[2]string{"MinIO", "Go module github.com/minio/minio " + minio.Version},
		[2]string{"OpenSSH", deb("openssh-server")},
		[2]string{"fake-gcs-server", "Go module github.com/fsouza/fake-gcs-server " + fakegcs.Version},
		[2]string{"Azurite", "npm azurite " + azurite.Version},
		[2]string{"OpenStack Swift", deb("swift-proxy")},
	)
}

// storeNotes are caveats true of every run.
func storeNotes(stores []*storeUnderTest) []string {
	var creds []string
	for _, s := range stores {
		if s.run.Ran() {
			creds = append(creds, fmt.Sprintf("%s: %s", s.run.Store, envNames(s.target.env)))
		}
	}
	return []string{
		"One cluster (initdb, `pgbench -i`, CHECKPOINT; archive_mode on), its data directory read once from a cold cache before round 1, unmeasured (see the peer section's notes).",
		"Every round, on every store whose server started: a new repository (`pgvault repo init`, encrypted), then a full backup into it as postgres (`--method auto`, which reads the data directory itself here, checked), with archive_command pushing into the same repository, so the backup's wait for its last WAL segment pays that store's `wal push`; then `pgvault restore latest --to-immediate --target-action promote` into a new folder, as postgres; then the instant mount, as root, until `" + FirstQuery + "` answers on the server started on it, as in the instant-restore section.",
		"The backups of all stores run first, in an order rotated every round, then the restores, then the instant mounts. Before every backup: the archiver idle, CHECKPOINT, then sync and `echo 3 > /proc/sys/vm/drop_caches`; before every restore and mount, sync and drop the caches (the servers' files are on the same disk, so they read cold too).",
		"The restore runs with the cache folder the backup filled (index tables, the derived key), as a restore on the database host would; the instant mount runs as root with a new, empty cache folder each time.",
		"The servers are those of the integration tests (integration/minio, integration/sshd, integration/fakegcs, integration/azurite, integration/swiftaio), started once before round 1 with their settings there and all running until the end, so an idle server's background work costs every store alike. sshd logs in as root and serves the repository's folder through internal-sftp.",
		"Each store's variables beside the URL (values not shown): " + strings.Join(creds, "; ") + ". The commands above show each store's `repo init`; its backup, restore and mount are the commands shown (the first store's of round 1) with that store's PGVAULT_REPO and variables.",
		"Every pgvault command ran with PGVAULT_CPUPROFILE set (Go's 100 Hz sampling profiler; its overhead is well under 1%).",
		"Nothing else was stopped on the host while measuring: the load averages at the start and end are above.",
	}
}

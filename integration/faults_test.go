package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgvault/pgvault/integration/fakegcs"
	"github.com/pgvault/pgvault/integration/minio"
	"github.com/pgvault/pgvault/integration/pgtest"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/all"
)

// The fault campaign: pgvault's commands run on a storage backend that
// injects faults (PGVAULT_TEST_FAULTS, cmd/pgvault/testfaults.go: the
// repo/backend/faulty wrapper under the retry wrapper), on a real S3
// server restarted mid-backup, on full disks, and against a PostgreSQL
// restarted mid-stream. Transient faults are retried and the command
// succeeds; a flipped bit is detected and never returned as data; past the
// retry limit the failure is one line; nothing is ever left half-written.
// FAULT_ROUNDS (default 3) sets how many seeds the bit-flip rounds try;
// `make torture` raises it.

// with returns a copy of the vault whose commands get extra environment.
func (v *vault) with(extra ...string) *vault {
	w := *v
	w.env = append(slices.Clone(v.env), extra...)
	return &w
}

// faultCounts adds up the JSON lines that PGVAULT_TEST_FAULTS_REPORT
// collects.
type faultCounts struct {
	Errors        int64 `json:"errors"`
	Latencies     int64 `json:"latencies"`
	ShortReads    int64 `json:"short_reads"`
	PartialWrites int64 `json:"partial_writes"`
	BitFlips      int64 `json:"bit_flips"`
}

func (f faultCounts) total() int64 {
	return f.Errors + f.Latencies + f.ShortReads + f.PartialWrites + f.BitFlips
}

// faultLine is one line of the report: a process's counts, written when
// its storage backend closed.
type faultLine struct {
	PID     int    `json:"pid"`
	Command string `json:"command"`
	faultCounts
}

func (f *faultCounts) add(c faultCounts) {
	f.Errors += c.Errors
	f.Latencies += c.Latencies
	f.ShortReads += c.ShortReads
	f.PartialWrites += c.PartialWrites
	f.BitFlips += c.BitFlips
}

func readFaultLines(t *testing.T, path string) []faultLine {
	t.Helper()
	var lines []faultLine
	data, _ := os.ReadFile(path)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var l faultLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("fault report %s: %v", path, err)
		}
		lines = append(lines, l)
	}
	return lines
}

func readFaultReport(t *testing.T, path string) faultCounts {
	t.Helper()
	var sum faultCounts
	for _, l := range readFaultLines(t, path) {
		sum.add(l.faultCounts)
	}
	return sum
}

// oneLineFailure checks that r failed with exit code want and one line of
// stderr that contains every one of subs; it returns the line.
func oneLineFailure(t *testing.T, what string, r result, want int, subs ...string) string {
	t.Helper()
	line := strings.TrimSpace(r.stderr)
	if r.code != want || line == "" || strings.Contains(line, "\n") {
		t.Fatalf("%s: exit %d (want %d) and stderr (want one line):\n%s\nstdout:\n%s", what, r.code, want, r.stderr, r.stdout)
	}
	for _, s := range subs {
		if !strings.Contains(line, s) {
			t.Fatalf("%s: %q does not say %q", what, line, s)
		}
	}
	return line
}

// tmpfs mounts a tmpfs of the given size (e.g. "20m") on a new folder that
// postgres may use, unmounted when the test ends.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := pgtest.TempDir(t)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v\n%s", dir, err, out)
	}
	t.Cleanup(func() {
		// A process that has just exited may keep the mount busy a moment.
		if poll(5*time.Second, func() (bool, error) { return exec.Command("umount", dir).Run() == nil, nil }) != nil {
			exec.Command("umount", "-l", dir).Run()
		}
	})
	return dir
}

// sameFiles compares every regular file under got with the file of the
// same path under want; a file of got may instead fail to read with EIO
// (a detected fault), never differ. It returns how many were identical
// and how many failed with EIO.
func sameFiles(t *testing.T, want, got string) (same, eio int) {
	t.Helper()
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		if rel == "backup_manifest" || rel == "tablespace_map" {
			return nil
		}
		w, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		g, err := os.ReadFile(filepath.Join(got, rel))
		if errors.Is(err, syscall.EIO) {
			eio++
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if !bytes.Equal(w, g) {
			return fmt.Errorf("%s: the mount returned different bytes (%d vs %d bytes) without an error", rel, len(g), len(w))
		}
		same++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return same, eio
}

func TestFaultCampaign(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 2)
	c.CreateMarkers(t)
	faultCampaign(t, c, newPostgresVault(t))
}

// TestFaultCampaignGCS is the campaign on a real GCS API server
// (fake-gcs-server): the faults are injected under the retry wrapper, on
// top of the GCS backend's own requests.
func TestFaultCampaignGCS(t *testing.T) {
	srv := fakegcs.Start(t)
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 2)
	c.CreateMarkers(t)
	faultCampaign(t, c, newPostgresVaultAt(t, srv.URL("campaign"), srv.Env()))
}

// faultCampaign runs the campaign against the cluster c (pgbench tables
// and markers created) and the fresh repository of v, whatever its store.
func faultCampaign(t *testing.T, c *pgtest.Cluster, v *vault) {
	rounds := envInt(t, "FAULT_ROUNDS", 3)
	report := filepath.Join(t.TempDir(), "faults.jsonl")
	faults := func(spec string) *vault {
		return v.with("PGVAULT_TEST_FAULTS="+spec, "PGVAULT_TEST_FAULTS_REPORT="+report)
	}
	const transient = "error=0.05,latency=0.05,latency_ms=5,shortread=0.05,partial=0.05,delay=5ms"
	var want []int64
	mark := func(note string) { want = append(want, c.InsertMarker(t, note).ID) }
	var injected faultCounts
	tally := func(what string) {
		got := readFaultReport(t, report)
		os.Remove(report)
		t.Logf("%s: faults injected: %+v", what, got)
		injected.add(got)
	}
	check := func(what string) {
		t.Helper()
		if r := v.run("repo", "check", "--read-data"); r.code != 0 {
			t.Fatalf("repo check --read-data after %s: exit %d\n%s%s", what, r.code, r.stdout, r.stderr)
		}
	}
	outcomes := map[string]int{}

	// The streamer runs under transient faults for the whole campaign.
	s := faults("seed=7,"+transient).startStreamer("--pg", c.ReplicationConnString())
	waitSlotActive(t, c, "pgvault")
	ctx, stopLoad := context.WithCancel(context.Background())
	waitLoad := c.PgbenchBackground(ctx, t, "-c", "2")
	mark("streaming under faults")

	var backupID string
	t.Run("backup under transient faults", func(t *testing.T) {
		var rep backupReport
		faults("seed=11,"+transient).json(&rep, "--pg", c.ReplicationConnString(), "backup", "--fast-checkpoint")
		backupID = rep.ID
		tally("backup")
		mark("after the faulty backup")
		check("a backup under faults")
	})
	if backupID == "" {
		t.FailNow()
	}

	var clean string // a restore without faults, to compare with
	t.Run("restore under transient faults", func(t *testing.T) {
		clean = v.restore(backupID, "--no-recovery-config")
		verifyBackup(t, clean)
		dir := faults("seed=13,"+transient).restore(backupID, "--no-recovery-config")
		tally("restore")
		verifyBackup(t, dir)
		if out, err := exec.Command("diff", "-r", clean, dir).CombinedOutput(); err != nil {
			t.Fatalf("a restore under transient faults differs from a clean one: %v\n%s", err, out)
		}
		os.RemoveAll(dir)
	})

	t.Run("bit flips on read are detected", func(t *testing.T) {
		for seed := 1; seed <= rounds; seed++ {
			target := filepath.Join(pgtest.TempDir(t), "data")
			// Alternately many flips and few, so that both outcomes occur.
			p := []string{"0.02", "0.002"}[seed%2]
			r := faults(fmt.Sprintf("seed=%d,bitflip=%s,types=pack+index+snapshot", 100+seed, p)).run("restore", backupID, "--target", target, "--no-recovery-config")
			tally(fmt.Sprintf("restore with bit flips, seed %d", seed))
			if r.code == 0 {
				verifyBackup(t, target)
				outcomes["restore with flips: byte-exact"]++
				continue
			}
			line := oneLineFailure(t, "restore with flipped bits", r, 1)
			if !strings.Contains(line, "pack ") && !strings.Contains(line, "blob ") && !strings.Contains(line, "index ") && !strings.Contains(line, "snapshot ") {
				t.Fatalf("restore with flipped bits failed without naming the object: %s", line)
			}
			outcomes["restore with flips: refused, naming the object"]++
		}
		// wal fetch: every read of a pack flips a bit.
		name := firstSegment(t, v)
		dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")
		r := faults("seed=5,bitflip=1,types=pack").run("wal", "fetch", "--prefetch", "0", name, dest)
		tally("wal fetch with bit flips")
		oneLineFailure(t, "wal fetch of a flipped segment", r, 1, name)
		if _, err := os.Stat(dest); err == nil {
			t.Fatal("wal fetch wrote a segment it read with a flipped bit")
		}
		outcomes["wal fetch with flips: refused"]++
		// repo check --read-data reads a pack that does not match its name
		// again: flips on 2% of the reads are warnings, not damage; flips
		// on every read are damage (exit 3). A check without faults shows
		// the repository is fine.
		r = faults("seed=9,bitflip=0.02,types=pack").run("--output", "json", "repo", "check", "--read-data")
		tally("repo check with 2% bit flips")
		if r.code != 0 {
			t.Fatalf("repo check --read-data with bits flipped on the way: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		outcomes["repo check with 2% flips: passed, re-read warnings "+fmt.Sprint(strings.Count(r.stdout, "then whole"))]++
		r = faults("seed=9,bitflip=1,types=pack").run("repo", "check", "--read-data")
		tally("repo check with every read flipped")
		if r.code != 3 && r.code != 1 {
			t.Fatalf("repo check --read-data with flipped bits: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		check("reads with flipped bits")
	})

	t.Run("past the retry limit", func(t *testing.T) {
		r := faults("error=1,types=pack,attempts=3,delay=5ms").run("--pg", c.ReplicationConnString(), "backup", "--fast-checkpoint")
		tally("backup past the retry limit")
		oneLineFailure(t, "backup past the retry limit", r, 1, "giving up after 3 attempts", "pack")
		var list []map[string]any
		v.json(&list, "list")
		if len(list) != 1 {
			t.Fatalf("a failed backup is listed: %v", list)
		}
		check("a backup that gave up")
		v.backup(c)
		mark("after the retried backup")
	})

	t.Run("PostgreSQL restarted mid-stream", func(t *testing.T) {
		stopLoad()
		waitLoad()
		mark("before the restart")
		c.Restart(t)
		mark("after a clean restart")
		c.Stop(t, "immediate")
		c.Start(t)
		mark("after crash recovery")
		waitSlotActive(t, c, "pgvault")
		waitStored(t, c, "pgvault")
		if r := v.run("wal", "check"); r.code != 0 {
			t.Fatalf("wal check after PostgreSQL restarts: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})
	// Failover to a standby and a new timeline mid-stream:
	// TestStreamFollowsFailoverToNewTimeline (stream_test.go).

	t.Run("restore to latest under faults has every marker", func(t *testing.T) {
		mark("last")
		waitStored(t, c, "pgvault")
		s.stop()
		tally("wal stream")
		dir := faults("seed=17,"+transient).restore("latest", "--no-recovery-config")
		tally("restore latest")
		// restore_command runs under faults too.
		v.configureRecovery(t, dir)
		conf := filepath.Join(dir, "postgresql.auto.conf")
		b, _ := os.ReadFile(conf)
		b = bytes.Replace(b, []byte("restore_command = '"), []byte("restore_command = 'PGVAULT_TEST_FAULTS=seed=19,"+transient+" "), 1)
		os.WriteFile(conf, b, 0o600)
		postgresOwns(t, dir)
		r := pgtest.StartOn(t, dir, pgtest.Options{})
		r.WaitRecoveryDone(t)
		got := r.MarkerIDs(t)
		for _, id := range want {
			if !slices.Contains(got, id) {
				t.Fatalf("marker %d is missing after a restore under faults (have %d of %d)", id, len(got), len(want))
			}
		}
		r.Stop(t, "fast")
		if rw := v.run("wal", "check"); rw.code != 0 {
			t.Fatalf("wal check after streaming under faults: exit %d\n%s%s", rw.code, rw.stdout, rw.stderr)
		}
		check("streaming and restoring under faults")
	})

	t.Run("mount under faults", func(t *testing.T) {
		postgresOwns(t, v.base)
		// Transient faults only: every file reads back byte-exact.
		mnt := pgtest.TempDir(t)
		m := startMount(t, faults("seed=23,"+transient).env, mnt)
		snap := filepath.Join(mnt, "snapshots", backupID[:8])
		same, eio := sameFiles(t, clean, snap)
		if eio != 0 || same == 0 {
			t.Fatalf("browse mount under transient faults: %d files identical, %d failed", same, eio)
		}
		m.stop()
		tally("browse mount, transient faults")
		// Bit flips: a file reads back byte-exact or fails with EIO.
		mnt = pgtest.TempDir(t)
		m = startMount(t, faults("seed=29,bitflip=0.01,types=pack").env, mnt)
		same, eio = sameFiles(t, clean, filepath.Join(mnt, "snapshots", backupID[:8]))
		m.stop()
		tally("browse mount, bit flips")
		outcomes["mount with flips: files byte-exact"] += same
		outcomes["mount with flips: files failing with EIO"] += eio
		t.Logf("browse mount with bit flips: %d files byte-exact, %d failed with EIO, none different", same, eio)
	})

	t.Run("restore target disk full", func(t *testing.T) {
		small := tmpfs(t, "20m")
		target := filepath.Join(small, "data")
		before := v.listing(t)
		r := v.run("restore", backupID, "--target", target, "--no-recovery-config")
		oneLineFailure(t, "restore onto a full disk", r, 1, "disk full", target)
		if _, err := os.Stat(target); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("a failed restore left %s behind (%v)", target, err)
		}
		if after := v.listing(t); !mapsEqual(before, after) {
			t.Fatal("a failed restore changed the repository")
		}
		outcomes["restore onto a full disk: one line"]++
	})

	t.Run("scratch disk full under an instant mount", func(t *testing.T) {
		postgresOwns(t, v.base)
		before := v.listing(t)
		scratch := tmpfs(t, "80m") // room for recovery to the backup's end, little more
		mnt := pgtest.TempDir(t)
		m := startMount(t, v.env, mnt, "--backup", backupID, "--scratch", scratch, "--to-immediate")
		r := pgtest.StartOn(t, mnt, pgtest.Options{Settings: map[string]string{"max_wal_size": "32MB", "min_wal_size": "32MB"}})
		r.WaitRecoveryDone(t)
		// Write until the scratch disk is full.
		var werr error
		for i := 0; i < 200 && werr == nil; i++ {
			werr = tryExec(r, fmt.Sprintf("CREATE TABLE fill%d AS SELECT g, md5(g::text) AS v FROM generate_series(1, 100000) g", i))
		}
		// PostgreSQL reports it to the client (could not extend file: No
		// space left on device, or, when the scratch disk took part of the
		// block, "wrote only 4096 of 8192 bytes", both disk_full, SQLSTATE
		// 53100), or, when it was WAL that did not fit, PANICs and says so
		// in its log.
		serverLog, _ := os.ReadFile(r.LogFile())
		if werr == nil || !strings.Contains(werr.Error(), "No space left on device") && !strings.Contains(werr.Error(), "SQLSTATE 53100") && !strings.Contains(string(serverLog), "No space left on device") {
			t.Fatalf("writing onto a full scratch disk: %v (want PostgreSQL to report no space)", werr)
		}
		t.Logf("PostgreSQL on a full scratch disk: %v; server log: %s", werr, grepLine(string(serverLog), "No space left"))
		stopImmediate(mnt)
		m.stop()
		if after := v.listing(t); !mapsEqual(before, after) {
			t.Fatal("the instant mount changed the repository")
		}
		check("a full scratch disk")
		outcomes["scratch disk full: PostgreSQL reports it, repository untouched"]++
	})

	t.Logf("FAULT RESULT injected %+v (%d faults); outcomes %v", injected, injected.total(), outcomes)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// firstSegment is the name of the oldest complete WAL segment stored.
func firstSegment(t *testing.T, v *vault) string {
	t.Helper()
	var names []string
	v.list(t, backend.WALFile, func(fi backend.FileInfo) {
		if name := path.Base(fi.Name); len(name) == 24 {
			names = append(names, name)
		}
	})
	if len(names) == 0 {
		t.Fatal("no WAL segment in the repository")
	}
	slices.Sort(names)
	return names[0]
}

func TestFaultMinIORestartMidBackup(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 2)
	srv := minio.Start(t)
	restartMidBackup(t, c, "MinIO", srv.URL("repo"), srv.Env(), srv.Restart)
}

// TestFaultGCSRestartMidBackup: fake-gcs-server keeps its objects in a
// folder, so a restart loses nothing it acknowledged.
func TestFaultGCSRestartMidBackup(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 2)
	srv := fakegcs.Start(t)
	restartMidBackup(t, c, "fake-gcs-server", srv.URL("repo"), srv.Env(), srv.Restart)
}

// restartMidBackup restarts the store's server (restart) while a backup of
// c streams into the repository at url: the backup either succeeds
// through retries or fails in one line, the repository passes its check,
// the next backup succeeds and restores byte-exact.
func restartMidBackup(t *testing.T, c *pgtest.Cluster, server, url string, env []string, restart func()) {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "password")
	os.WriteFile(pw, []byte("integration secret\n"), 0o600)
	v := &vault{t: t, repo: url, env: append([]string{
		"PGVAULT_REPO=" + url, "PGVAULT_PASSWORD_FILE=" + pw, "PGVAULT_CACHE_DIR=" + t.TempDir(),
	}, env...)}
	v.must("repo", "init")
	// The moments of the restart, as how far the server has streamed the
	// backup (8 MB/s: 16 MiB is 2 s in), not as time: on a loaded machine
	// a fixed delay may fall before the backup has even started.
	moments := []int64{16 << 20}
	if envInt(t, "FAULT_ROUNDS", 3) > 3 { // make torture: more moments
		moments = []int64{4 << 20, 12 << 20, 24 << 20, 36 << 20}
	}
	for round, moment := range moments {
		p := v.start("--pg", c.ReplicationConnString(), "backup", "--fast-checkpoint", "--max-rate", "8192")
		waitFor(t, time.Minute, fmt.Sprintf("the backup to stream %d MiB", moment>>20), func() (bool, error) {
			select {
			case <-p.done:
				t.Fatalf("round %d: the backup ended before the restart: %v\n%s", round, p.err, p.out)
			default:
			}
			n := c.QueryInt(t, "SELECT coalesce((SELECT backup_streamed FROM pg_stat_progress_basebackup), 0)")
			return n >= moment, fmt.Errorf("%d bytes streamed", n)
		})
		restart()
		<-p.done
		out := p.out.String()
		if p.err != nil {
			// A clean failure: one line.
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "pgvault: ") {
				t.Fatalf("round %d: backup failed across the %s restart, not in one line: %v\n%s", round, server, p.err, out)
			}
			t.Logf("round %d: backup across the %s restart failed cleanly: %s", round, server, lines[0])
		} else {
			t.Logf("round %d: backup across the %s restart succeeded through retries", round, server)
		}
		if r := v.run("repo", "check"); r.code != 0 {
			t.Fatalf("round %d: repo check after the %s restart: exit %d\n%s%s", round, server, r.code, r.stdout, r.stderr)
		}
		v.backup(c) // a retry succeeds
	}
	if r := v.run("repo", "check", "--read-data"); r.code != 0 {
		t.Fatalf("repo check --read-data: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	dir := v.restore("latest", "--no-recovery-config")
	verifyBackup(t, dir)
}

// tryExec runs one statement in database postgres and returns its error.
func tryExec(c *pgtest.Cluster, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// stopImmediate stops the server on dataDir if it still runs (it may
// have stopped itself after a PANIC).
func stopImmediate(dataDir string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = pgtest.RunAsPostgres(ctx, "pg_ctl", "stop", "-D", dataDir, "-m", "immediate", "-w").Run()
}

// TestFaultAgentUploadRetriesAlert: the agent streams into a real S3
// server that then dies; its uploads fail and are retried, and the
// upload_retries_warning alert file appears. Once the server is back, the
// streamer catches up and the archive has no gap.
func TestFaultAgentUploadRetriesAlert(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.CreateMarkers(t)
	srv := minio.Start(t)
	srv.SetEnv(t) // the agent's environment: filteredEnv keeps AWS_*
	base := pgtest.TempDir(t)
	pw := filepath.Join(base, "password")
	os.WriteFile(pw, []byte("integration secret\n"), 0o600)
	url := srv.URL("agent")
	v := &vault{t: t, repo: url, base: base, pwFile: pw, env: append([]string{
		"PGVAULT_REPO=" + url, "PGVAULT_PASSWORD_FILE=" + pw, "PGVAULT_CACHE_DIR=" + t.TempDir(),
	}, srv.Env()...)}
	v.must("repo", "init")
	setup := agentSetupIn(base, url, pw)
	setup.write(t, c.ConnString("postgres"), `    upload_retries_warning_limit: 1
    basebackup:
      interval: 1h
      fast_checkpoint: true`)
	a := setup.start(t)
	waitSlotActive(t, c, "pgvault")
	c.InsertMarker(t, "before the S3 server dies")
	waitStored(t, c, "pgvault")

	srv.Kill()
	c.InsertMarker(t, "while the S3 server is down")
	c.SwitchWAL(t)
	al := waitAlert(t, setup.alerts, "upload_retries_warning", true, 60*time.Second)
	t.Logf("alert %s: %s", al.Alert, al.Message)
	if !strings.Contains(al.Message, "failed") {
		t.Fatalf("alert message %q", al.Message)
	}
	srv.Restart()
	c.InsertMarker(t, "after the S3 server is back")
	waitStored(t, c, "pgvault")
	if code, _ := a.stop(); code != 0 {
		t.Fatalf("agent exited %d", code)
	}
	if r := v.run("wal", "check"); r.code != 0 {
		t.Fatalf("wal check after the S3 outage: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := v.run("repo", "check"); r.code != 0 {
		t.Fatalf("repo check after the S3 outage: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestFaultAgentUnderTransientFaults: the agent's storage runs under the
// test build's transient faults (PGVAULT_TEST_FAULTS, which the agent
// applies through agent.Options.StorageHook as the CLI applies it to its
// commands): it streams WAL and takes its first base backup regardless,
// the fault report shows errors injected into the agent process itself,
// and the repository then checks clean without faults.
func TestFaultAgentUnderTransientFaults(t *testing.T) {
	start := time.Now()
	c := pgtest.Start(t, pgtest.Options{})
	c.CreateMarkers(t)
	v := newPostgresVault(t)
	s := newAgentSetup(t, c, v)
	s.write(t, c.ConnString("postgres"), `    basebackup:
      interval: 1h
      fast_checkpoint: true`)
	report := filepath.Join(t.TempDir(), "faults.jsonl")
	a := s.start(t, "PGVAULT_TEST_FAULTS=seed=7,error=0.05,latency=0.2,latency_ms=5", "PGVAULT_TEST_FAULTS_REPORT="+report)

	// WAL: a marker in a completed segment, confirmed by the slot (the
	// streamer confirms only what it has stored), and the first backup.
	waitSlotActive(t, c, "pgvault")
	m := c.InsertMarker(t, "streamed under faults")
	c.SwitchWAL(t)
	waitStored(t, c, "pgvault")
	st := a.waitState("a base backup and the marker's WAL in the state file", 45*time.Second, func(st agentState) bool {
		ss := st.Sites["main"]
		return ss.Backup.Count >= 1 && ss.Streamer != nil && ss.Streamer.Flushed != "" && lsn(t, ss.Streamer.Flushed) >= lsn(t, m.LSN)
	})
	ss := st.Sites["main"]
	t.Logf("under faults the agent took backup %s and stored WAL to %s; upload retries %d, upload errors %d",
		ss.Backup.Last.ID[:8], ss.Streamer.Flushed, ss.Uploads.Retries, ss.Uploads.Errors)
	pid := a.cmd.Process.Pid
	if code, _ := a.stop(); code != 0 {
		t.Fatalf("agent exited %d after SIGTERM", code)
	}

	// Each storage backend the agent opened added its line as it closed.
	var agent faultCounts
	lines := readFaultLines(t, report)
	n := 0
	for _, l := range lines {
		if l.PID == pid {
			agent.add(l.faultCounts)
			n++
		}
	}
	if n == 0 {
		t.Fatalf("the fault report has no lines from the agent (pid %d): its storage ran without faults; report: %+v", pid, lines)
	}
	if agent.Errors == 0 || agent.Latencies == 0 {
		t.Fatalf("the agent's %d report lines show no injected errors or latencies: %+v", n, agent)
	}
	t.Logf("faults injected into the agent (%d backends): %+v", n, agent)

	// Without faults: the repository is whole, the WAL has no gap.
	if r := v.run("repo", "check", "--read-data"); r.code != 0 {
		t.Fatalf("repo check --read-data after the agent ran under faults: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := v.run("wal", "check"); r.code != 0 {
		t.Fatalf("wal check after the agent ran under faults: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("agent fault test: %.1fs", time.Since(start).Seconds())
}

// list calls fn with every object of type ft in the vault's repository,
// through its store's backend (a folder or a server).
func (v *vault) list(t *testing.T, ft backend.FileType, fn func(backend.FileInfo)) {
	t.Helper()
	for _, kv := range v.env {
		// The store's variables (credentials, emulator host), for this
		// process's own backend.
		if k, val, ok := strings.Cut(kv, "="); ok && !strings.HasPrefix(k, "PGVAULT_") {
			t.Setenv(k, val)
		}
	}
	b, err := all.Open(context.Background(), v.repo, all.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.List(context.Background(), ft, func(fi backend.FileInfo) error { fn(fi); return nil }); err != nil {
		t.Fatalf("list %v in %s: %v", ft, b.Location(), err)
	}
}

// listing is repoListing for a repository in any store: every object but
// the locks, with its size and modification time.
func (v *vault) listing(t *testing.T) map[string]string {
	t.Helper()
	if !strings.Contains(v.repo, "://") {
		return repoListing(t, v.repo)
	}
	out := map[string]string{}
	for _, ft := range backend.AllTypes {
		if ft == backend.LockFile {
			continue
		}
		v.list(t, ft, func(fi backend.FileInfo) {
			out[backend.Handle{Type: ft, Name: fi.Name}.Path()] = fmt.Sprintf("%d %d", fi.Size, fi.ModTime.UnixNano())
		})
	}
	return out
}

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/pgtest"
	"github.com/pgvault/pgvault/integration/swiftaio"
)

// The Swift tests: the main job, the fault campaign's store-facing part
// and a server restart mid-backup, each against a real OpenStack Swift
// all-in-one (integration/swiftaio).

// TestStoreEndToEndSwift is the main job against Swift.
func TestStoreEndToEndSwift(t *testing.T) {
	srv := swiftaio.Start(t)
	storeEndToEnd(t, srv.URL("e2e"), srv.Env())
}

// storeVault creates an encrypted repository at url (a store's URL; env
// holds its credentials) and sets env for the test too: restored servers'
// restore_command inherits it, as storeEndToEnd explains.
func storeVault(t *testing.T, url string, env []string) *vault {
	t.Helper()
	for _, kv := range env {
		k, val, _ := strings.Cut(kv, "=")
		t.Setenv(k, val)
	}
	base := pgtest.TempDir(t)
	pw := filepath.Join(base, "password")
	if err := os.WriteFile(pw, []byte("store secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v := &vault{t: t, repo: url, base: base, pwFile: pw, env: append([]string{
		"PGVAULT_REPO=" + url, "PGVAULT_PASSWORD_FILE=" + pw, "PGVAULT_CACHE_DIR=" + filepath.Join(base, "cache"),
	}, env...)}
	v.must("repo", "init")
	return v
}

// TestFaultCampaignSwift runs the fault campaign's storage faults on a
// Swift repository: WAL streamed, a backup taken and restored under
// transient faults (errors, latency, short reads, partial writes), bit
// flips on read detected, the retry limit ending in one line, and a
// restore to the latest WAL that has every marker. (The campaign's disk
// and PostgreSQL faults do not depend on the store: TestFaultCampaign.)
func TestFaultCampaignSwift(t *testing.T) {
	srv := swiftaio.Start(t)
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 2)
	c.CreateMarkers(t)
	v := storeVault(t, srv.URL("faults"), srv.Env())
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

	s := faults("seed=7,"+transient).startStreamer("--pg", c.ReplicationConnString())
	waitSlotActive(t, c, "pgvault")
	ctx, stopLoad := context.WithCancel(context.Background())
	waitLoad := c.PgbenchBackground(ctx, t, "-c", "2")
	mark("streaming under faults")

	var rep backupReport
	faults("seed=11,"+transient).json(&rep, "--pg", c.ReplicationConnString(), "backup", "--fast-checkpoint")
	tally("backup")
	mark("after the faulty backup")
	check("a backup under faults")

	clean := v.restore(rep.ID, "--no-recovery-config")
	verifyBackup(t, clean)
	dir := faults("seed=13,"+transient).restore(rep.ID, "--no-recovery-config")
	tally("restore")
	if out, err := exec.Command("diff", "-r", clean, dir).CombinedOutput(); err != nil {
		t.Fatalf("a restore under transient faults differs from a clean one: %v\n%s", err, out)
	}
	os.RemoveAll(dir)

	outcomes := map[string]int{}
	for seed := 1; seed <= 2; seed++ {
		target := filepath.Join(pgtest.TempDir(t), "data")
		p := []string{"0.02", "0.002"}[seed%2]
		r := faults(fmt.Sprintf("seed=%d,bitflip=%s,types=pack+index+snapshot", 100+seed, p)).run("restore", rep.ID, "--target", target, "--no-recovery-config")
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

	r := faults("error=1,types=pack,attempts=3,delay=5ms").run("--pg", c.ReplicationConnString(), "backup", "--fast-checkpoint")
	tally("backup past the retry limit")
	oneLineFailure(t, "backup past the retry limit", r, 1, "giving up after 3 attempts", "pack")
	var list []map[string]any
	v.json(&list, "list")
	if len(list) != 1 {
		t.Fatalf("a failed backup is listed: %v", list)
	}
	outcomes["backup past the retry limit: one line, not listed"]++

	stopLoad()
	waitLoad()
	mark("last")
	c.SwitchWAL(t)
	waitStored(t, c, "pgvault")
	s.stop()
	tally("wal stream")
	if rw := v.run("wal", "check"); rw.code != 0 {
		t.Fatalf("wal check after streaming under faults: exit %d\n%s%s", rw.code, rw.stdout, rw.stderr)
	}
	check("streaming under faults")

	// The restored server fetches WAL from Swift through restore_command.
	latest := v.restore("latest")
	rs := pgtest.StartOn(t, latest, pgtest.Options{})
	rs.WaitRecoveryDone(t)
	got := rs.MarkerIDs(t)
	for _, id := range want {
		if !slices.Contains(got, id) {
			t.Fatalf("marker %d is missing after a restore from Swift (have %d of %d)", id, len(got), len(want))
		}
	}
	rs.Stop(t, "fast")
	if injected.total() == 0 {
		t.Fatal("no fault was injected")
	}
	t.Logf("SWIFT FAULT RESULT injected %+v (%d faults); outcomes %v", injected, injected.total(), outcomes)
}

// TestFaultSwiftRestartMidBackup restarts the Swift all-in-one while a
// backup streams into it: the backup succeeds through retries or fails in
// one line, the repository stays sound, and the next backup restores.
func TestFaultSwiftRestartMidBackup(t *testing.T) {
	srv := swiftaio.Start(t)
	storeRestartMidBackup(t, srv.URL("restart"), srv.Env(), srv.Restart)
}

// storeRestartMidBackup is TestFaultMinIORestartMidBackup for any store:
// restart restarts its server.
func storeRestartMidBackup(t *testing.T, url string, env []string, restart func()) {
	t.Helper()
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 2)
	v := storeVault(t, url, env)
	// The moment of the restart, as how far the server has streamed the
	// backup (8 MB/s: 16 MiB is 2 s in), not as time.
	const moment = 16 << 20
	p := v.start("--pg", c.ReplicationConnString(), "backup", "--fast-checkpoint", "--max-rate", "8192")
	waitFor(t, time.Minute, fmt.Sprintf("the backup to stream %d MiB", moment>>20), func() (bool, error) {
		select {
		case <-p.done:
			t.Fatalf("the backup ended before the restart: %v\n%s", p.err, p.out)
		default:
		}
		n := c.QueryInt(t, "SELECT coalesce((SELECT backup_streamed FROM pg_stat_progress_basebackup), 0)")
		return n >= moment, fmt.Errorf("%d bytes streamed", n)
	})
	began := time.Now()
	restart()
	t.Logf("the store's server restarted in %v", time.Since(began).Round(time.Millisecond))
	<-p.done
	out := p.out.String()
	if p.err != nil {
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "pgvault: ") {
			t.Fatalf("backup failed across the restart, not in one line: %v\n%s", p.err, out)
		}
		t.Logf("backup across the restart failed cleanly: %s", lines[0])
	} else {
		t.Logf("backup across the restart succeeded through retries")
	}
	if r := v.run("repo", "check"); r.code != 0 {
		t.Fatalf("repo check after the restart: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	v.backup(c) // a retry succeeds
	if r := v.run("repo", "check", "--read-data"); r.code != 0 {
		t.Fatalf("repo check --read-data: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	dir := v.restore("latest", "--no-recovery-config")
	verifyBackup(t, dir)
}

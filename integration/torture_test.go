package integration

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// The crash campaign: kill -9 of `wal stream`, `backup` and `prune` at
// random moments under pgbench load. `make torture` runs it in full
// (TORTURE_KILLS=20 kills of each); a plain `go test` runs a short form
// (2 of each). TORTURE_SEED picks the moments; the seed is logged, so a
// failure can be replayed.
//
// After every kill: `repo check` passes (while the streamer keeps
// writing). After a streamer kill, once it is back and has caught up,
// `wal check` finds no gap. At the end: every listed backup restores and
// passes pg_verifybackup -n, and a restore to the end of the archive holds
// every marker row whose INSERT had returned before the streamer was
// stopped (the test waits for the slot to confirm the last marker's LSN,
// as the streamer is asynchronous).

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a number", name, s)
	}
	return n
}

// proc is a pgvault process started in the background.
type proc struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan struct{}
	err  error
}

func (v *vault) start(args ...string) *proc {
	v.t.Helper()
	return v.startWith(nil, args...)
}

// startWith is start with extra environment variables.
func (v *vault) startWith(env []string, args ...string) *proc {
	v.t.Helper()
	cmd := exec.Command(pgvaultBin, args...)
	cmd.Env = append(append(filteredEnv(), v.env...), env...)
	p := &proc{cmd: cmd, out: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	// A killed pgvault's children (the PostgreSQL a synthetic backup or
	// a drill started) may hold its output pipe until they end.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		v.t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t := v.t
	t.Cleanup(func() {
		p.kill()
		if t.Failed() { // what the process said, when a wait on it failed
			t.Logf("pgvault %v:\n%s", args, p.out)
		}
	})
	return p
}

// kill sends SIGKILL and reports whether the process was still running
// (false: it had already exited on its own).
func (p *proc) kill() bool {
	select {
	case <-p.done:
		return false
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return true
	}
	return false
}

// ageBefore makes the pack and index objects of a file repository last
// modified before cutoff look two hours old, so that prune's grace period
// does not protect them. Objects written after cutoff keep their times:
// the streamer started at cutoff may reuse blobs it stored itself, and in
// real life those packs are younger than the grace period.
func ageBefore(t *testing.T, repoDir string, cutoff time.Time) int {
	t.Helper()
	old := time.Now().Add(-2 * time.Hour)
	n := 0
	for _, dir := range []string{"packs", "index"} {
		filepath.Walk(filepath.Join(repoDir, dir), func(p string, info os.FileInfo, err error) error {
			if err == nil && info.Mode().IsRegular() && info.ModTime().Before(cutoff) {
				os.Chtimes(p, old, old)
				n++
			}
			return nil
		})
	}
	return n
}

// markFor inserts a marker every interval for about d (at least one) and
// returns their IDs. It is the load under which a campaign's kill lands
// at a random moment: the moment, not a condition, is the point, so
// this one wait is on the clock.
func markFor(t *testing.T, c *pgtest.Cluster, d, every time.Duration, note string) []int64 {
	t.Helper()
	tick := time.NewTicker(every)
	defer tick.Stop()
	end := time.NewTimer(d)
	defer end.Stop()
	var ids []int64
	for i := 0; ; i++ {
		ids = append(ids, c.InsertMarker(t, fmt.Sprintf("%s %d", note, i)).ID)
		select {
		case <-end.C:
			return ids
		case <-tick.C:
		}
	}
}

type tortureStats struct {
	kills, finished map[string]int
	checks          int
	markers         int
}

func TestTorture(t *testing.T) {
	kills := envInt(t, "TORTURE_KILLS", 2)
	seed := envInt(t, "TORTURE_SEED", 1)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x746f7274757265))
	t.Logf("crash campaign: TORTURE_SEED=%d TORTURE_KILLS=%d (kills of each of wal stream, backup, prune)", seed, kills)

	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 2)
	c.CreateMarkers(t)
	v := newPostgresVault(t)
	streamArgs := []string{"--pg", c.ReplicationConnString()}
	s := v.startStreamer(streamArgs...)
	streamerStart := time.Now()
	waitSlotActive(t, c, "pgvault")
	v.backup(c)

	ctx, stopLoad := context.WithCancel(context.Background())
	waitLoad := c.PgbenchBackground(ctx, t, "-c", "2")
	st := tortureStats{kills: map[string]int{}, finished: map[string]int{}}
	var want []int64
	mark := func(note string) {
		want = append(want, c.InsertMarker(t, note).ID)
	}
	markWhile := func(d time.Duration, note string) {
		want = append(want, markFor(t, c, d, 40*time.Millisecond, note)...)
	}
	randDur := func(maxMS int) time.Duration { return time.Duration(rng.IntN(maxMS+1)) * time.Millisecond }
	repoCheck := func(after string) {
		t.Helper()
		r := v.run("repo", "check")
		if r.code != 0 {
			t.Fatalf("repo check after %s: exit %d\n%s%s", after, r.code, r.stdout, r.stderr)
		}
		st.checks++
	}

	var order []string
	for range kills {
		order = append(order, "stream", "backup", "prune")
	}
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for round, target := range order {
		what := fmt.Sprintf("round %d: kill -9 of %s", round, target)
		roundStart := time.Now()
		switch target {
		case "stream":
			markWhile(randDur(1500), what+" before")
			s.kill()
			st.kills["wal stream"]++
			mark(what + " while down")
			repoCheck(what)
			s = v.startStreamer(streamArgs...)
			streamerStart = time.Now()
			waitSlotActive(t, c, "pgvault")
			mark(what + " after restart")
			waitStored(t, c, "pgvault")
			if r := v.run("wal", "check"); r.code != 0 {
				t.Fatalf("wal check after %s, streamer back: exit %d\n%s%s", what, r.code, r.stdout, r.stderr)
			}
		case "backup":
			// Throttled a little, so that most kills land mid-transfer
			// (some land in the checkpoint, some before it connects).
			landed := false
			for try := 0; try < 4 && !landed; try++ {
				p := v.start("--pg", c.ReplicationConnString(), "backup", "--fast-checkpoint", "--max-rate", "16384")
				markWhile(randDur(2500), what)
				if landed = p.kill(); landed {
					st.kills["backup"]++
				} else {
					if p.err != nil {
						t.Fatalf("%s: the backup failed on its own: %v\n%s", what, p.err, p.out)
					}
					st.finished["backup"]++
				}
			}
			repoCheck(what)
		case "prune":
			// Something to prune: one more backup than --keep-last 2 keeps,
			// and data old enough. Only objects written before the running
			// streamer started are aged (see ageBefore).
			v.backup(c)
			ageBefore(t, v.repo, streamerStart)
			landed := false
			for try := 0; try < 4 && !landed; try++ {
				// Prune takes a fraction of a second (no KDF with the key
				// cache): 15 ms of injected latency per storage call (the
				// fault campaign's latency fault) stretches it, as
				// --max-rate does the backup, so that kills land between
				// its reads and deletes.
				p := v.startWith([]string{"PGVAULT_TEST_FAULTS=latency=1,latency_ms=15"}, "prune", "--keep-last", "2", "--apply")
				markWhile(randDur(800), what)
				if landed = p.kill(); landed {
					st.kills["prune"]++
				} else {
					if p.err != nil {
						t.Fatalf("%s: prune failed on its own: %v\n%s", what, p.err, p.out)
					}
					st.finished["prune"]++
				}
			}
			repoCheck(what)
		}
		t.Logf("%s: repository checked in %.1fs (markers so far: %d)", what, time.Since(roundStart).Seconds(), len(want))
	}
	stopLoad()
	waitLoad()
	mark("last")
	waitStored(t, c, "pgvault") // the slot confirmed the last marker's WAL
	s.stop()
	st.markers = len(want)

	if r := v.run("wal", "check"); r.code != 0 {
		t.Fatalf("final wal check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := v.run("repo", "check", "--read-data"); r.code != 0 {
		t.Fatalf("final repo check --read-data: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var list []struct {
		ID string `json:"id"`
	}
	v.json(&list, "list")
	if len(list) == 0 {
		t.Fatal("no backup listed")
	}
	for _, b := range list {
		dir := v.restore(b.ID, "--no-recovery-config")
		verifyBackup(t, dir)
		os.RemoveAll(dir)
	}
	target := v.restore("latest", "--no-recovery-config")
	v.configureRecovery(t, target)
	r := pgtest.StartOn(t, target, pgtest.Options{})
	r.WaitRecoveryDone(t)
	got := r.MarkerIDs(t)
	for _, id := range want {
		if !slices.Contains(got, id) {
			t.Fatalf("marker %d, committed before the final stop, is missing after restore (have %d of %d)", id, len(got), len(want))
		}
	}
	t.Logf("TORTURE RESULT seed=%d kills: wal stream %d, backup %d, prune %d (runs that finished before their kill: backup %d, prune %d); %d repo checks passed; %d backups restored and verified; %d of %d markers restored",
		seed, st.kills["wal stream"], st.kills["backup"], st.kills["prune"], st.finished["backup"], st.finished["prune"], st.checks, len(list), len(want), st.markers)
	for _, k := range []string{"wal stream", "backup", "prune"} {
		if st.kills[k] < kills {
			t.Errorf("only %d kills of %s landed mid-run (want %d): the timing no longer fits", st.kills[k], k, kills)
		}
	}
}

// TestTortureAgent kills `pgvault agent` (streaming, a base backup every
// 3 s, retention after each) with SIGKILL at random moments under pgbench
// load, TORTURE_KILLS times, restarting it each time. After every kill
// `repo check` passes; at the end `wal check` passes, every listed backup
// restores and passes pg_verifybackup -n, and the restore to latest holds
// every marker committed before the final stop.
func TestTortureAgent(t *testing.T) {
	kills := envInt(t, "TORTURE_KILLS", 2)
	seed := envInt(t, "TORTURE_SEED", 1)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6167656e74))
	t.Logf("agent crash campaign: TORTURE_SEED=%d TORTURE_KILLS=%d", seed, kills)
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 1)
	c.CreateMarkers(t)
	v := newPostgresVault(t)
	setup := newAgentSetup(t, c, v)
	setup.write(t, c.ConnString("postgres"), `    basebackup:
      interval: 3s
      fast_checkpoint: true
    retention:
      basebackup_count: 2
      grace: 15m
    wal_check:
      interval: 2s`)
	ctx, stopLoad := context.WithCancel(context.Background())
	waitLoad := c.PgbenchBackground(ctx, t, "-c", "2")
	var want []int64
	a := setup.start(t)
	waitSlotActive(t, c, "pgvault")
	for round := range kills {
		want = append(want, markFor(t, c, time.Duration(500+rng.IntN(4000))*time.Millisecond, 50*time.Millisecond, fmt.Sprintf("agent round %d", round))...)
		a.cmd.Process.Signal(syscall.SIGKILL)
		<-a.waitErr
		want = append(want, c.InsertMarker(t, fmt.Sprintf("agent round %d, agent down", round)).ID)
		if r := v.run("repo", "check"); r.code != 0 {
			t.Fatalf("repo check after kill -9 of the agent (round %d): exit %d\n%s%s", round, r.code, r.stdout, r.stderr)
		}
		a = setup.start(t)
		waitSlotActive(t, c, "pgvault")
	}
	stopLoad()
	waitLoad()
	want = append(want, c.InsertMarker(t, "last").ID)
	waitStored(t, c, "pgvault")
	if code, _ := a.stop(); code != 0 {
		t.Fatalf("agent exited %d after SIGTERM", code)
	}
	if r := v.run("wal", "check"); r.code != 0 {
		t.Fatalf("wal check after the agent campaign: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := v.run("repo", "check", "--read-data"); r.code != 0 {
		t.Fatalf("repo check --read-data after the agent campaign: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var list []struct {
		ID string `json:"id"`
	}
	v.json(&list, "list")
	if len(list) == 0 {
		t.Fatal("the agent stored no backup")
	}
	for _, b := range list {
		dir := v.restore(b.ID, "--no-recovery-config")
		verifyBackup(t, dir)
		os.RemoveAll(dir)
	}
	target := v.restore("latest", "--no-recovery-config")
	v.configureRecovery(t, target)
	r := pgtest.StartOn(t, target, pgtest.Options{})
	r.WaitRecoveryDone(t)
	got := r.MarkerIDs(t)
	for _, id := range want {
		if !slices.Contains(got, id) {
			t.Fatalf("marker %d is missing after the agent campaign (have %d of %d)", id, len(got), len(want))
		}
	}
	t.Logf("TORTURE RESULT agent seed=%d: %d kills of the agent, %d repo checks passed, %d backups restored and verified, %d of %d markers restored",
		seed, kills, kills, len(list), len(want), len(want))
}

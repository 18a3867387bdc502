package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// streamer is a running `pgvault wal stream` process.
type streamer struct {
	t   *testing.T
	cmd *exec.Cmd
	log *bytes.Buffer
}

// startStreamer starts `pgvault wal stream` against the given nodes.
func (v *vault) startStreamer(extra ...string) *streamer {
	v.t.Helper()
	args := append([]string{"--log-level", "info", "wal", "stream", "--flush-interval", "200ms"}, extra...)
	cmd := exec.Command(pgvaultBin, args...)
	cmd.Env = append(filteredEnv(), v.env...)
	s := &streamer{t: v.t, cmd: cmd, log: &bytes.Buffer{}}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		v.t.Fatal(err)
	}
	v.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return s
}

// kill sends SIGKILL and reaps the process.
func (s *streamer) kill() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	s.cmd.Wait()
}

// stop sends SIGTERM and waits: the streamer stores what it has and exits 0.
func (s *streamer) stop() {
	s.t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	if err := s.cmd.Wait(); err != nil {
		s.t.Fatalf("wal stream exited with %v:\n%s", err, s.log)
	}
}

// waitSlotActive waits until the streamer is connected.
func waitSlotActive(t *testing.T, c *pgtest.Cluster, slot string) {
	t.Helper()
	waitFor(t, 30*time.Second, "replication slot "+slot+" to become active", func() (bool, error) {
		return c.QueryInt(t, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active", slot) == 1, nil
	})
}

// waitStored waits until the slot confirms WAL up to the server's current
// position: the streamer reports as flushed only what is in the repository.
func waitStored(t *testing.T, c *pgtest.Cluster, slot string) {
	t.Helper()
	waitConfirmed(t, c, slot, c.CurrentLSN(t))
}

// waitConfirmed waits until the slot confirms WAL up to target.
func waitConfirmed(t *testing.T, c *pgtest.Cluster, slot, target string) {
	t.Helper()
	waitFor(t, 60*time.Second, fmt.Sprintf("slot %s to confirm %s", slot, target), func() (bool, error) {
		at := c.QueryString(t, "SELECT coalesce((SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = $1), '')", slot)
		if at == "" {
			return false, errors.New("no such slot, or it holds no WAL")
		}
		return lsn(t, at) >= lsn(t, target), fmt.Errorf("its restart_lsn is %s", at)
	})
}

// waitSent waits until the server has sent WAL up to target to the
// client that holds the slot: the client has it, stored or not.
func waitSent(t *testing.T, c *pgtest.Cluster, slot, target string) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("the server to send %s to the holder of slot %s", target, slot), func() (bool, error) {
		sent := c.QueryString(t, `SELECT coalesce((SELECT r.sent_lsn::text FROM pg_stat_replication r
			JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = $1), '')`, slot)
		if sent == "" {
			return false, errors.New("no WAL sender serves the slot")
		}
		return lsn(t, sent) >= lsn(t, target), fmt.Errorf("sent_lsn is %s", sent)
	})
}

// postgresOwns hands paths to the postgres OS user (restore_command runs as
// postgres and reads the repository, password file and cache).
func postgresOwns(t *testing.T, paths ...string) {
	t.Helper()
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, p := range paths {
		filepath.Walk(p, func(path string, info os.FileInfo, err error) error {
			if err == nil {
				os.Lchown(path, uid, gid)
			}
			return nil
		})
	}
}

// newPostgresVault is a vault whose repository, password file and cache
// the postgres OS user can use, for tests whose restores run
// restore_command.
func newPostgresVault(t *testing.T) *vault {
	t.Helper()
	return newPostgresVaultAt(t, "", nil)
}

// newPostgresVaultAt is newPostgresVault with the repository at url (a
// store's URL, env its variables), or in the vault's folder when url is
// empty.
func newPostgresVaultAt(t *testing.T, url string, env []string) *vault {
	t.Helper()
	base := pgtest.TempDir(t)
	if url == "" {
		url = filepath.Join(base, "repo")
	}
	pw := filepath.Join(base, "password")
	os.WriteFile(pw, []byte("integration secret\n"), 0o600)
	v := &vault{t: t, repo: url, base: base, env: append([]string{
		"PGVAULT_REPO=" + url,
		"PGVAULT_PASSWORD_FILE=" + pw,
		"PGVAULT_CACHE_DIR=" + filepath.Join(base, "cache-root"),
	}, env...)}
	v.pwFile = pw
	v.must("repo", "init")
	return v
}

// configureRecovery makes a restored data directory recover to the end of
// the archive, fetching WAL with `pgvault wal fetch`.
func (v *vault) configureRecovery(t *testing.T, dataDir string) {
	t.Helper()
	// The repository quoted for the shell ('' is a quote inside the
	// setting's own quotes): a store's URL has '&' and '?'; its %-escapes
	// would be PostgreSQL's placeholders.
	cmd := fmt.Sprintf("PGVAULT_REPO=''%s'' PGVAULT_PASSWORD_FILE=%s PGVAULT_CACHE_DIR=%s %s wal fetch %%f %%p",
		strings.ReplaceAll(v.repo, "%", "%%"), v.pwFile, filepath.Join(v.base, "cache-postgres"), pgvaultBin)
	conf := fmt.Sprintf("\nrestore_command = '%s'\nrecovery_target_timeline = 'latest'\n", cmd)
	f, err := os.OpenFile(filepath.Join(dataDir, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(conf)
	f.Close()
	os.WriteFile(filepath.Join(dataDir, "recovery.signal"), nil, 0o600)
	postgresOwns(t, v.base)
}

func TestStreamKilledThreeTimesLosesNothing(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 2)
	c.CreateMarkers(t)
	v := newPostgresVault(t)
	s := v.startStreamer("--pg", c.ReplicationConnString())
	waitSlotActive(t, c, "pgvault")
	v.backup(c)

	ctx, stopLoad := context.WithCancel(context.Background())
	wait := c.PgbenchBackground(ctx, t, "-c", "2", "-T", "600")
	var want []int64
	for round := range 3 {
		// Each kill lands while the streamer is at work: it has stored
		// part of the round's markers, and the server has sent it the
		// rest, which it holds unstored until its next flush (200 ms).
		var m pgtest.Marker
		for i := range 20 {
			m = c.InsertMarker(t, fmt.Sprintf("round %d marker %d", round, i))
			want = append(want, m.ID)
			if i == 9 {
				waitConfirmed(t, c, "pgvault", m.LSN)
			}
		}
		waitSent(t, c, "pgvault", m.LSN)
		s.kill()
		for i := range 5 {
			want = append(want, c.InsertMarker(t, fmt.Sprintf("round %d while down %d", round, i)).ID)
		}
		s = v.startStreamer("--pg", c.ReplicationConnString())
		waitSlotActive(t, c, "pgvault")
	}
	stopLoad()
	wait()
	want = append(want, c.InsertMarker(t, "last").ID)
	waitStored(t, c, "pgvault")
	s.stop()

	check := v.run("wal", "check")
	if check.code != 0 {
		t.Fatalf("wal check after three kills: exit %d\n%s%s", check.code, check.stdout, check.stderr)
	}
	target := v.restore("latest", "--no-recovery-config")
	v.configureRecovery(t, target)
	r := pgtest.StartOn(t, target, pgtest.Options{})
	r.WaitRecoveryDone(t)
	got := r.MarkerIDs(t)
	for _, id := range want {
		if !slices.Contains(got, id) {
			t.Fatalf("marker %d committed before the streamer stopped is missing after restore (have %d of %d)", id, len(got), len(want))
		}
	}
	t.Logf("restore to latest has all %d markers", len(want))
}

func TestStreamSynchronousCommitIsInRepository(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.CreateMarkers(t)
	v := newPostgresVault(t)
	s := v.startStreamer("--pg", c.ReplicationConnString(), "--synchronous")
	waitSlotActive(t, c, "pgvault")
	// Only now: with no synchronous standby connected, commits would wait.
	c.Exec(t, "ALTER SYSTEM SET synchronous_standby_names = 'pgvault'")
	c.Exec(t, "SELECT pg_reload_conf()")
	waitFor(t, 30*time.Second, "the streamer to become the synchronous standby", func() (bool, error) {
		state := c.QueryString(t, "SELECT coalesce(max(sync_state), '') FROM pg_stat_replication WHERE application_name = 'pgvault'")
		return state == "sync", fmt.Errorf("sync_state %q", state)
	})
	v.backup(c)
	start := time.Now()
	m := c.InsertMarker(t, "must survive")
	latency := time.Since(start)
	// The commit returned: its WAL is in the repository. Lose everything
	// else at once: the streamer and the server, data directory included.
	s.kill()
	c.Stop(t, "immediate")
	os.RemoveAll(c.DataDir())
	t.Logf("synchronous commit took %v", latency)

	target := v.restore("latest", "--no-recovery-config")
	v.configureRecovery(t, target)
	r := pgtest.StartOn(t, target, pgtest.Options{})
	r.WaitRecoveryDone(t)
	if !slices.Contains(r.MarkerIDs(t), m.ID) {
		t.Fatalf("the synchronously committed marker %d is missing after restore", m.ID)
	}
}

// TestStreamFollowsFailoverToNewTimeline streams from a primary, loses it,
// moves on to its standby (the second --pg), follows the standby's
// promotion to timeline 2, and restores every marker of both timelines.
func TestStreamFollowsFailoverToNewTimeline(t *testing.T) {
	p := pgtest.Start(t, pgtest.Options{})
	p.CreateMarkers(t)
	v := newPostgresVault(t)
	rep := v.backup(p, "--standalone")

	// The standby: restored from that backup, streaming from the primary.
	standbyDir := v.restore(rep.ID, "--standby", "--primary-conninfo", p.ConnString("postgres"))
	postgresOwns(t, v.base)
	s := pgtest.StartOn(t, standbyDir, pgtest.Options{})
	s.WaitReady(t)

	st := v.startStreamer("--pg", p.ReplicationConnString(), "--pg", s.ReplicationConnString())
	waitSlotActive(t, p, "pgvault")
	var want []int64
	for i := range 10 {
		want = append(want, p.InsertMarker(t, fmt.Sprintf("primary %d", i)).ID)
	}
	target := p.CurrentLSN(t)
	waitStored(t, p, "pgvault")
	waitFor(t, 60*time.Second, "the standby to replay up to "+target, func() (bool, error) {
		return s.QueryInt(t, "SELECT count(*) WHERE pg_last_wal_replay_lsn() >= $1::pg_lsn", target) == 1, nil
	})

	p.Stop(t, "fast")
	waitSlotActive(t, s, "pgvault") // the streamer moved on to the standby
	s.Promote(t)
	s.WaitRecoveryDone(t)
	for i := range 10 {
		want = append(want, s.InsertMarker(t, fmt.Sprintf("promoted %d", i)).ID)
	}
	waitStored(t, s, "pgvault")
	st.stop()
	if !strings.Contains(st.log.String(), "timeline=2") {
		t.Fatalf("the streamer never streamed timeline 2:\n%s", st.log)
	}

	if r := v.run("wal", "check"); r.code != 0 {
		t.Fatalf("wal check across the timeline switch: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	dir := v.restore("latest")
	postgresOwns(t, v.base)
	r := pgtest.StartOn(t, dir, pgtest.Options{})
	r.WaitRecoveryDone(t)
	got := r.MarkerIDs(t)
	for _, id := range want {
		if !slices.Contains(got, id) {
			t.Fatalf("marker %d missing after restore across the failover (have %d of %d)", id, len(got), len(want))
		}
	}
}

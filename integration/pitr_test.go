package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// pitrVault is a repository the postgres OS user owns: archive_command
// (wal push) and restore_command (wal fetch) run as postgres, so every
// pgvault command of these tests runs as postgres too, and the repository,
// password file and cache live under a pgtest.TempDir.
type pitrVault struct {
	t                     *testing.T
	base, repo, pw, cache string
	env                   []string
}

func newPITRVault(t *testing.T) *pitrVault {
	t.Helper()
	base := pgtest.TempDir(t)
	v := &pitrVault{t: t, base: base, repo: filepath.Join(base, "repo"), pw: filepath.Join(base, "password"), cache: filepath.Join(base, "cache")}
	if err := os.WriteFile(v.pw, []byte("pitr secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pgOwn(t, v.pw)
	v.env = []string{"PGVAULT_REPO=" + v.repo, "PGVAULT_PASSWORD_FILE=" + v.pw, "PGVAULT_CACHE_DIR=" + v.cache}
	v.must("repo", "init")
	return v
}

// pgOwn gives paths to the postgres OS user.
func pgOwn(t *testing.T, paths ...string) {
	t.Helper()
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, p := range paths {
		if err := os.Lchown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
}

// archiveSettings makes a cluster archive its WAL into the repository.
func (v *pitrVault) archiveSettings() map[string]string {
	return map[string]string{
		"archive_mode": "on",
		"archive_command": fmt.Sprintf("PGVAULT_REPO=%s PGVAULT_PASSWORD_FILE=%s PGVAULT_CACHE_DIR=%s %s wal push %%p",
			v.repo, v.pw, v.cache, pgvaultBin),
	}
}

// run executes pgvault as postgres.
func (v *pitrVault) run(args ...string) result {
	v.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := pgtest.RunAsPostgres(ctx, pgvaultBin, args...)
	cmd.Env = append(cmd.Env, v.env...)
	return runCmd(v.t, cmd, args)
}

func (v *pitrVault) must(args ...string) string {
	v.t.Helper()
	return succeeded(v.t, v.run(args...), args)
}

func (v *pitrVault) json(into any, args ...string) {
	v.t.Helper()
	decodeJSON(v.t, v.must(append([]string{"--output", "json"}, args...)...), into, args)
}

func (v *pitrVault) backup(c *pgtest.Cluster) backupReport {
	v.t.Helper()
	var rep backupReport
	v.json(&rep, "--pg", c.ReplicationConnString(), "backup", "--fast-checkpoint")
	return rep
}

// pitrReport is the part of restore's JSON document the tests read.
type pitrReport struct {
	ID      string `json:"id"`
	Preview bool   `json:"preview"`
	Seconds float64
	Plan    struct {
		Timeline     uint32 `json:"timeline"`
		Segments     int    `json:"segments"`
		FirstSegment string `json:"first_segment"`
		LastSegment  string `json:"last_segment"`
		Chosen       string `json:"chosen"`
		WAL          []struct {
			Timeline uint32 `json:"timeline"`
		} `json:"wal"`
	} `json:"plan"`
	Delta *struct {
		Checked        int64    `json:"checked"`
		Unchanged      int64    `json:"unchanged"`
		Rewritten      int64    `json:"rewritten"`
		Created        int64    `json:"created"`
		Removed        int64    `json:"removed"`
		BytesWritten   int64    `json:"bytes_written"`
		BytesRead      int64    `json:"bytes_read"`
		RewrittenFiles []string `json:"rewritten_files"`
		CreatedFiles   []string `json:"created_files"`
	} `json:"delta"`
	Bytes    int64    `json:"bytes"`
	Warnings []string `json:"warnings"`
}

// restore runs pgvault restore into target (a new folder under a
// pgtest.TempDir when empty) and returns the folder and the report.
func (v *pitrVault) restore(t *testing.T, target string, args ...string) (string, pitrReport) {
	t.Helper()
	if target == "" {
		target = filepath.Join(pgtest.TempDir(t), "data")
	}
	var rep pitrReport
	v.json(&rep, append([]string{"restore", "--target", target}, args...)...)
	return target, rep
}

// pitrNotes lists the marker notes of a cluster in insertion order.
func pitrNotes(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	return c.QueryString(t, "SELECT coalesce(string_agg(note, ',' ORDER BY id), '') FROM "+pgtest.MarkerTable)
}

// pitrSwitchAndWait ends the current WAL segment and waits until
// PostgreSQL has archived it.
// TestBackupWaitsForPushedWAL: with archive_command pushing into the
// repository, the backup asks PostgreSQL not to wait for archiving (it
// polls once a second) and waits for its stop segment in the repository
// itself; the backup then restores to consistency.
func TestBackupWaitsForPushedWAL(t *testing.T) {
	v := newPITRVault(t)
	c := pgtest.Start(t, pgtest.Options{Settings: v.archiveSettings()})
	// First a new repository, into which nothing was archived yet (a new
	// cluster archives nothing before its first segment switch): the
	// archive_command names the repository, which is enough.
	for _, step := range []string{"new repository", "segments archived"} {
		if step == "segments archived" {
			c.PgbenchInit(t, 1)
			pitrSwitchAndWait(t, c)
		}
		res := v.run("--log-level", "debug", "--pg", c.ReplicationConnString(), "backup", "--fast-checkpoint")
		succeeded(t, res, []string{"backup"})
		if !strings.Contains(res.stderr, "waits for its WAL in this repository") {
			t.Fatalf("%s: the backup left the WAL wait to PostgreSQL:\n%s", step, res.stderr)
		}
	}
	c.Stop(t, "fast")
	dir, _ := v.restore(t, "", "latest", "--to-immediate", "--target-action", "promote")
	r := startRestored(t, dir, nil)
	waitPromoted(t, r)
	if n := r.QueryInt(t, "SELECT count(*) FROM pgbench_accounts"); n != 100000 {
		t.Fatalf("restored pgbench_accounts has %d rows", n)
	}
}

func pitrSwitchAndWait(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	seg := c.QueryString(t, "SELECT pg_walfile_name(pg_switch_wal())")
	waitFor(t, 60*time.Second, "segment "+seg+" to be archived", func() (bool, error) {
		var last, failed string
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
		if err == nil {
			err = conn.QueryRow(ctx, "SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, '') FROM pg_stat_archiver").Scan(&last, &failed)
			conn.Close(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		// Segment names of one timeline sort by position.
		return len(last) >= 24 && last[:24] >= seg, fmt.Errorf("last archived %q, last failed %q; server log %s", last, failed, c.LogFile())
	})
}

// pitrMarker inserts a marker and returns it with the transaction ID it
// committed in.
func pitrMarker(t *testing.T, c *pgtest.Cluster, note string) (pgtest.Marker, int64) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	m := pgtest.Marker{Note: note}
	var xid int64
	if err := conn.QueryRow(ctx, "INSERT INTO "+pgtest.MarkerTable+" (note) VALUES ($1) RETURNING id, txid_current()", note).Scan(&m.ID, &xid); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT clock_timestamp(), pg_current_wal_lsn()::text").Scan(&m.CommittedAt, &m.LSN); err != nil {
		t.Fatal(err)
	}
	return m, xid
}

// startRestored starts PostgreSQL on a restored data directory without
// archiving (a restored copy must not push its new timeline into the
// repository the tests read) and logs how long startup took.
func startRestored(t *testing.T, dir string, settings map[string]string) *pgtest.Cluster {
	t.Helper()
	if settings == nil {
		settings = map[string]string{"archive_mode": "off"}
	}
	start := time.Now()
	c := pgtest.StartOn(t, dir, pgtest.Options{Settings: settings})
	t.Logf("pg_ctl start (until connections are accepted) took %.1fs", time.Since(start).Seconds())
	return c
}

// waitPromoted waits for the end of recovery and logs the time it took.
func waitPromoted(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	start := time.Now()
	c.WaitRecoveryDone(t)
	t.Logf("recovery ended %.1fs after the server accepted connections", time.Since(start).Seconds())
}

func wantNotes(t *testing.T, c *pgtest.Cluster, want ...string) {
	t.Helper()
	if got := pitrNotes(t, c); got != strings.Join(want, ",") {
		t.Fatalf("markers after recovery: %q, want %q", got, strings.Join(want, ","))
	}
}

// TestPITR archives a cluster's WAL with `pgvault wal push`, takes base
// backups and restores to points in time, as a standby, over an existing
// copy, and across timelines, checking the exact set of marker rows each
// time. One primary serves every subtest, in order.
func TestPITR(t *testing.T) {
	v := newPITRVault(t)
	c := pgtest.Start(t, pgtest.Options{Settings: v.archiveSettings()})
	c.CreateMarkers(t)
	b1 := v.backup(c)
	m1, _ := pitrMarker(t, c, "m1")
	m2, _ := pitrMarker(t, c, "m2")
	pitrMarker(t, c, "m3")
	b2 := v.backup(c)
	m4, _ := pitrMarker(t, c, "m4")
	_, xid5 := pitrMarker(t, c, "m5")
	m6, _ := pitrMarker(t, c, "m6")
	// Two seconds between m6 and m7: room for a target said in whole
	// seconds relative to now ("relative time" below).
	waitFor(t, time.Minute, "two seconds after m6", func() (bool, error) { return time.Since(m6.CommittedAt) > 2*time.Second, nil })
	c.Exec(t, "SELECT pg_create_restore_point('before-m7')")
	pitrMarker(t, c, "m7")
	pitrSwitchAndWait(t, c)
	all := []string{"m1", "m2", "m3", "m4", "m5", "m6", "m7"}
	_ = m1

	t.Run("time", func(t *testing.T) {
		dir, rep := v.restore(t, "", "--to", m2.CommittedAt.Format(time.RFC3339Nano), "--target-action", "promote")
		if rep.ID != b1.ID {
			t.Fatalf("the plan chose backup %s, want the first one (%s): the second ended after the target", rep.ID[:8], b1.ID[:8])
		}
		t.Logf("restore took %.1fs; plan: %d segments %s..%s", rep.Seconds, rep.Plan.Segments, rep.Plan.FirstSegment, rep.Plan.LastSegment)
		r := startRestored(t, dir, nil)
		waitPromoted(t, r)
		wantNotes(t, r, "m1", "m2")
	})

	t.Run("relative time", func(t *testing.T) {
		// One second after m6, said as "N seconds ago": within half a
		// second of it, so after m6 and before m7.
		ago := time.Since(m6.CommittedAt.Add(time.Second)).Round(time.Second)
		dir, rep := v.restore(t, "", "--to", fmt.Sprintf("%d seconds ago", int(ago.Seconds())), "--target-action", "promote")
		if rep.ID != b2.ID {
			t.Fatalf("the plan chose backup %s, want the second one (%s)", rep.ID[:8], b2.ID[:8])
		}
		r := startRestored(t, dir, nil)
		waitPromoted(t, r)
		wantNotes(t, r, "m1", "m2", "m3", "m4", "m5", "m6")
	})

	t.Run("lsn", func(t *testing.T) {
		dir, rep := v.restore(t, "", "--to-lsn", m4.LSN, "--target-action", "promote")
		if rep.ID != b2.ID {
			t.Fatalf("the plan chose backup %s, want the second one (%s)", rep.ID[:8], b2.ID[:8])
		}
		r := startRestored(t, dir, nil)
		waitPromoted(t, r)
		wantNotes(t, r, "m1", "m2", "m3", "m4")
	})

	t.Run("xid", func(t *testing.T) {
		dir, _ := v.restore(t, "", "--to-xid", strconv.FormatInt(xid5, 10), "--target-action", "promote")
		r := startRestored(t, dir, nil)
		waitPromoted(t, r)
		wantNotes(t, r, "m1", "m2", "m3", "m4", "m5")
	})

	t.Run("name, paused by default", func(t *testing.T) {
		dir, _ := v.restore(t, "", "--to-name", "before-m7")
		conf, _ := os.ReadFile(filepath.Join(dir, "postgresql.auto.conf"))
		if !strings.Contains(string(conf), "recovery_target_action = 'pause'") {
			t.Fatalf("the default target action is not written explicitly:\n%s", conf)
		}
		r := startRestored(t, dir, nil)
		waitFor(t, 2*time.Minute, "recovery to pause at the restore point", func() (bool, error) {
			state := r.QueryString(t, "SELECT pg_get_wal_replay_pause_state()")
			return state == "paused", fmt.Errorf("pause state %q", state)
		})
		if r.QueryString(t, "SELECT pg_is_in_recovery()") != "t" {
			t.Fatal("the server is not in recovery at the paused target")
		}
		wantNotes(t, r, "m1", "m2", "m3", "m4", "m5", "m6")
		r.Exec(t, "SELECT pg_wal_replay_resume()")
		waitPromoted(t, r)
		wantNotes(t, r, "m1", "m2", "m3", "m4", "m5", "m6")
	})

	t.Run("before the first backup", func(t *testing.T) {
		target := filepath.Join(pgtest.TempDir(t), "data")
		before := m1.CommittedAt.Add(-time.Hour).Format(time.RFC3339Nano)
		res := v.run("restore", "--target", target, "--to", before)
		lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
		if res.code != 1 || len(lines) != 1 || !strings.Contains(lines[0], "before the earliest restorable point") || !strings.Contains(lines[0], b1.ID[:8]) {
			t.Fatalf("exit %d, stderr:\n%s", res.code, res.stderr)
		}
		if _, err := os.Stat(target); err == nil {
			t.Fatal("a refused restore created the target")
		}
	})

	t.Run("preview", func(t *testing.T) {
		target := filepath.Join(pgtest.TempDir(t), "data")
		var rep pitrReport
		v.json(&rep, "restore", "--target", target, "--preview", "--to", m2.CommittedAt.Format(time.RFC3339Nano))
		if !rep.Preview || rep.ID != b1.ID || rep.Plan.Segments < 1 || rep.Plan.FirstSegment == "" {
			t.Fatalf("preview report: %+v", rep)
		}
		if _, err := os.Stat(target); err == nil {
			t.Fatal("--preview created the target")
		}
		text := v.must("restore", "--target", target, "--preview", "--to-lsn", m4.LSN)
		if !strings.Contains(text, "backup "+b2.ID[:8]) || !strings.Contains(text, "segments") || !strings.Contains(text, "nothing was written") {
			t.Fatalf("preview text:\n%s", text)
		}
	})

	t.Run("password file and cache the server cannot use", func(t *testing.T) {
		// Restore as root with a password file and a cache folder only root
		// can use: restore_command (run as postgres) would fail at the
		// first WAL file, so nothing is written and the line says why.
		rootPw := filepath.Join(t.TempDir(), "password")
		os.WriteFile(rootPw, []byte("pitr secret\n"), 0o600)
		rootCache := t.TempDir()
		target := filepath.Join(pgtest.TempDir(t), "data")
		cmd := exec.Command(pgvaultBin, "restore", "--target", target, "--to-immediate")
		cmd.Env = append(filteredEnv(), "PGVAULT_REPO="+v.repo, "PGVAULT_PASSWORD_FILE="+rootPw, "PGVAULT_CACHE_DIR="+rootCache)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("restore as root with a password file postgres cannot read: %v\n%s", err, out)
		}
		for _, want := range []string{"restore_command runs as uid", "the password file: " + rootPw, "the cache folder (--cache-dir): " + rootCache, "--no-recovery-config"} {
			if !strings.Contains(string(out), want) {
				t.Fatalf("the refusal does not say %q:\n%s", want, out)
			}
		}
		if _, err := os.Stat(target); err == nil {
			t.Fatal("a refused restore created the target")
		}
		// A copy of the files only needs no restore_command.
		cmd = exec.Command(pgvaultBin, "restore", "--target", target, "--no-recovery-config")
		cmd.Env = append(filteredEnv(), "PGVAULT_REPO="+v.repo, "PGVAULT_PASSWORD_FILE="+rootPw, "PGVAULT_CACHE_DIR="+rootCache)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("restore --no-recovery-config as root: %v\n%s", err, out)
		}
	})

	t.Run("delta", func(t *testing.T) {
		dir, rep := v.restore(t, "", b2.ID)
		r := startRestored(t, dir, nil)
		waitPromoted(t, r)
		wantNotes(t, r, all...)
		rel := r.QueryString(t, "SELECT pg_relation_filepath('"+pgtest.MarkerTable+"')")
		r.Exec(t, "UPDATE "+pgtest.MarkerTable+" SET note = 'changed'")
		r.Exec(t, "CREATE TABLE after_restore AS SELECT g FROM generate_series(1, 1000) g")
		r.Stop(t, "fast")

		_, drep := v.restore(t, dir, b2.ID, "--delta")
		d := drep.Delta
		if d == nil {
			t.Fatal("no delta report")
		}
		t.Logf("delta restore took %.1fs: checked %d files, %d unchanged, %d rewritten, %d created, %d removed; wrote %d bytes, read %d (full restore wrote %d)",
			drep.Seconds, d.Checked, d.Unchanged, d.Rewritten, d.Created, d.Removed, d.BytesWritten, d.BytesRead, rep.Bytes)
		if !contains(d.RewrittenFiles, rel) {
			t.Errorf("the changed table %s was not rewritten: %v", rel, d.RewrittenFiles)
		}
		for _, f := range append(d.RewrittenFiles, d.CreatedFiles...) {
			if strings.HasPrefix(f, "base/1/") {
				t.Errorf("%s (template1, untouched) was rewritten", f)
			}
		}
		if d.Rewritten+d.Created > d.Checked/4 || d.BytesWritten > rep.Bytes/4 || d.Removed == 0 {
			t.Errorf("delta rewrote too much or removed nothing: %+v", *d)
		}
		verifyBackup(t, dir)
		r.Start(t)
		waitPromoted(t, r)
		wantNotes(t, r, all...)
		if n := r.QueryInt(t, "SELECT count(*) FROM pg_class WHERE relname = 'after_restore'"); n != 0 {
			t.Fatal("a table created after the restore survived the delta restore")
		}
	})

	t.Run("standby", func(t *testing.T) {
		conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres application_name=pitr_standby", c.Port())
		dir, _ := v.restore(t, "", "--standby", "--primary-conninfo", conninfo)
		if _, err := os.Stat(filepath.Join(dir, "standby.signal")); err != nil {
			t.Fatal(err)
		}
		s := startRestored(t, dir, nil)
		s.WaitReady(t)
		// One minute for both waits together, as before.
		deadline := time.Now().Add(time.Minute)
		waitFor(t, time.Until(deadline), "the standby to stream from the primary (pg_stat_replication)", func() (bool, error) {
			return c.QueryInt(t, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pitr_standby' AND state = 'streaming'") == 1, nil
		})
		pitrMarker(t, c, "s1")
		all = append(all, "s1")
		waitFor(t, time.Until(deadline), "the row inserted on the primary to reach the standby", func() (bool, error) {
			got := pitrNotes(t, s)
			return got == strings.Join(all, ","), fmt.Errorf("the standby has %q", got)
		})
		if s.QueryString(t, "SELECT pg_is_in_recovery()") != "t" {
			t.Fatal("the standby left recovery")
		}
	})

	t.Run("timelines", func(t *testing.T) {
		pitrSwitchAndWait(t, c) // everything so far is archived: the fork keeps it all
		forked := append([]string(nil), all...)
		// A restored copy that archives into the same repository: it
		// promotes at the end of the archive onto timeline 2.
		dir2, _ := v.restore(t, "", b2.ID)
		c2 := startRestored(t, dir2, v.archiveSettings())
		waitPromoted(t, c2)
		wantNotes(t, c2, forked...)
		n1, _ := pitrMarker(t, c2, "n1")
		b3 := v.backup(c2)
		n2, _ := pitrMarker(t, c2, "n2")
		pitrSwitchAndWait(t, c2)
		// The old primary goes on writing timeline 1.
		m8, _ := pitrMarker(t, c, "m8")
		pitrSwitchAndWait(t, c)
		var list []struct {
			ID       string `json:"id"`
			Timeline uint32 `json:"timeline"`
		}
		v.json(&list, "list")
		if len(list) != 3 || list[2].ID != b3.ID || list[2].Timeline != 2 {
			t.Fatalf("backups: %+v", list)
		}

		t.Run("timeline 2 before its first backup", func(t *testing.T) {
			dir, rep := v.restore(t, "", "--to", n1.CommittedAt.Format(time.RFC3339Nano), "--target-action", "promote")
			if rep.ID != b2.ID || rep.Plan.Timeline != 2 || len(rep.Plan.WAL) != 2 || rep.Plan.WAL[0].Timeline != 1 || rep.Plan.WAL[1].Timeline != 2 {
				t.Fatalf("plan: backup %s, %+v; want backup %s, WAL of timeline 1 then 2", rep.ID[:8], rep.Plan, b2.ID[:8])
			}
			r := startRestored(t, dir, nil)
			waitPromoted(t, r)
			wantNotes(t, r, append(forked, "n1")...)
		})
		t.Run("timeline 2 after its backup", func(t *testing.T) {
			dir, rep := v.restore(t, "", "--to-lsn", n2.LSN, "--target-action", "promote")
			if rep.ID != b3.ID {
				t.Fatalf("the plan chose backup %s, want the timeline 2 backup %s", rep.ID[:8], b3.ID[:8])
			}
			r := startRestored(t, dir, nil)
			waitPromoted(t, r)
			wantNotes(t, r, append(forked, "n1", "n2")...)
		})
		t.Run("timeline 1 after the fork", func(t *testing.T) {
			dir, rep := v.restore(t, "", "--timeline", "1", "--to-lsn", m8.LSN, "--target-action", "promote")
			if rep.ID != b2.ID || rep.Plan.Timeline != 1 {
				t.Fatalf("plan: backup %s on timeline %d; want %s on 1", rep.ID[:8], rep.Plan.Timeline, b2.ID[:8])
			}
			r := startRestored(t, dir, nil)
			waitPromoted(t, r)
			wantNotes(t, r, append(forked, "m8")...)
		})
		t.Run("timeline 1 before the fork, chosen by the plan", func(t *testing.T) {
			dir, rep := v.restore(t, "", "--to", m6.CommittedAt.Format(time.RFC3339Nano), "--target-action", "promote")
			if rep.ID != b2.ID {
				t.Fatalf("the plan chose backup %s, want %s", rep.ID[:8], b2.ID[:8])
			}
			r := startRestored(t, dir, nil)
			waitPromoted(t, r)
			wantNotes(t, r, "m1", "m2", "m3", "m4", "m5", "m6")
		})
		t.Run("a timeline 2 backup cannot recover along timeline 1", func(t *testing.T) {
			// b3 is on timeline 2; with --timeline 1 it cannot be used.
			res := v.run("restore", b3.ID, "--target", filepath.Join(pgtest.TempDir(t), "data"), "--timeline", "1")
			if res.code != 1 || !strings.Contains(res.stderr, "is not in the history of timeline 1") {
				t.Fatalf("exit %d: %s", res.code, res.stderr)
			}
		})
	})
}

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// TestMajors runs pgvault's end-to-end core on every PostgreSQL major
// besides Debian's 15 (on which the whole suite runs): the server
// programs of 16, 17 and 18 come from `make deps`; the client programs
// (psql, pgbench, pg_amcheck) stay 15's, which serve the newer servers
// for what these steps ask of them. The majors run one after another, one
// cluster each.
func TestMajors(t *testing.T) {
	for _, major := range pgtest.NewerMajors {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			start := time.Now()
			testMajorCore(t, major)
			t.Logf("PostgreSQL %d: the core took %.1fs", major, time.Since(start).Seconds())
		})
	}
}

// preflightDoc is the part of `wal preflight --output json` read here.
type preflightDoc struct {
	Ready         bool   `json:"ready"`
	ServerVersion string `json:"server_version"`
	Findings      []struct {
		Setting string `json:"setting"`
		Status  string `json:"status"`
		Message string `json:"message"`
	} `json:"findings"`
}

func testMajorCore(t *testing.T, major int) {
	p := pgtest.Start(t, pgtest.Options{Major: major})
	if got := p.QueryInt(t, "SELECT current_setting('server_version_num')::int / 10000"); got != int64(major) {
		t.Fatalf("the cluster runs PostgreSQL %d, want %d", got, major)
	}
	p.CreateMarkers(t)
	p.PgbenchInit(t, 1)
	v := newPostgresVault(t)

	// Preflight names the major and says this pgvault supports it.
	var pre preflightDoc
	v.json(&pre, "--pg", p.ConnString("postgres"), "wal", "preflight")
	if !pre.Ready || !strings.HasPrefix(pre.ServerVersion, fmt.Sprint(major)) {
		t.Fatalf("preflight: ready %v, server %q", pre.Ready, pre.ServerVersion)
	}
	if f := findingOf(pre, "server_version"); f == "" || !strings.Contains(f, "supported by this pgvault") {
		t.Fatalf("preflight's server_version finding: %q", f)
	}

	// WAL streaming, killed with SIGKILL and started again: nothing that
	// was committed is lost.
	st := v.startStreamer("--pg", p.ReplicationConnString())
	waitSlotActive(t, p, "pgvault")
	var want []int64
	mark := func(c *pgtest.Cluster, note string) pgtest.Marker {
		m := c.InsertMarker(t, note)
		want = append(want, m.ID)
		return m
	}
	// Base backups by both methods.
	local := v.backup(p, "--method", "local")
	if local.Method != "local" {
		t.Fatalf("--method local took a %q backup", local.Method)
	}
	m1 := mark(p, "m1")
	streamed := v.backup(p, "--method", "stream")
	if streamed.Method != "stream" {
		t.Fatalf("--method stream took a %q backup", streamed.Method)
	}
	m2 := mark(p, "m2")
	waitSent(t, p, "pgvault", m2.LSN)
	st.kill()
	m3 := mark(p, "while the streamer is down")
	st = v.startStreamer("--pg", p.ReplicationConnString())
	waitSlotActive(t, p, "pgvault")
	m4 := mark(p, "m4")
	p.SwitchWAL(t)
	waitStored(t, p, "pgvault")
	if r := v.run("wal", "check"); r.code != 0 {
		t.Fatalf("wal check after the kill: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// PITR by time from the local backup, by LSN from the streamed one:
	// exactly the markers committed by then.
	postgresOwns(t, v.base)
	byTime := v.restore(local.ID, "--to", m1.CommittedAt.Format(time.RFC3339Nano), "--target-action", "promote")
	wantMarkers(t, byTime, "m1")
	byLSN := v.restore(streamed.ID, "--to-lsn", m3.LSN, "--target-action", "promote")
	wantMarkers(t, byLSN, "m1", "m2", "while the streamer is down")

	// A delta restore over the copy recovered by time, now to m4: only what
	// differs is written, and it recovers to m4.
	var delta pitrReport
	v.json(&delta, "restore", streamed.ID, "--target", byTime, "--delta", "--to-lsn", m4.LSN, "--target-action", "promote")
	if delta.Delta == nil || delta.Delta.Unchanged == 0 || delta.Delta.Checked == 0 {
		t.Fatalf("delta restore report: %+v", delta.Delta)
	}
	postgresOwns(t, v.base)
	wantMarkers(t, byTime, "m1", "m2", "while the streamer is down", "m4")

	// An instant mount at a point in time, started, written to.
	env := v.env
	scratch := t.TempDir()
	im, imDir := instantDir(t, env, scratch, "--backup", streamed.ID, "--to-lsn", m2.LSN)
	ic := pgtest.StartOn(t, imDir, pgtest.Options{})
	ic.WaitRecoveryDone(t)
	if got := pitrNotes(t, ic); got != "m1,m2" {
		t.Fatalf("instant mount at m2's LSN shows markers %q", got)
	}
	ic.Exec(t, "CREATE TABLE written_on_the_mount AS SELECT g FROM generate_series(1, 5000) g")
	ic.Exec(t, "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 10 = 0")
	ic.Checkpoint(t)
	if n := ic.QueryInt(t, "SELECT count(*) FROM written_on_the_mount"); n != 5000 {
		t.Fatalf("table written on the mount has %d rows", n)
	}
	ic.Stop(t, "fast")
	im.stop()

	// The browse mount shows the local backup exactly as a copy-out
	// restore writes it.
	mnt := pgtest.TempDir(t)
	bm := startMount(t, env, mnt)
	copyOut := v.restore(local.ID, "--no-recovery-config")
	wantSameTree(t, copyOut, filepath.Join(mnt, "snapshots", local.ID[:8]))
	bm.stop()

	// verify --boot finds this major's programs when given their folder,
	// and refuses another major's.
	bin := pgtest.ServerBinDir(major)
	var ver struct {
		OK   bool `json:"ok"`
		Boot struct {
			AmCheck string `json:"amcheck"`
		} `json:"boot"`
	}
	v.json(&ver, "verify", streamed.ID, "--boot", "--pg-bin", bin, "--to-lsn", m2.LSN)
	if !ver.OK || ver.Boot.AmCheck != "clean" {
		t.Fatalf("verify --boot on PostgreSQL %d: ok %v, amcheck %q", major, ver.OK, ver.Boot.AmCheck)
	}
	wrong := v.run("verify", streamed.ID, "--boot", "--pg-bin", pgtest.BinDir)
	if wrong.code == 0 || !strings.Contains(wrong.stderr, fmt.Sprintf("holds the programs of PostgreSQL 15, and the backup is of PostgreSQL %d", major)) {
		t.Fatalf("verify --boot with PostgreSQL 15's programs: exit %d: %s", wrong.code, wrong.stderr)
	}
	// dump refuses this host's pg_dump 15 for a newer major's backup, with
	// the fix, before it starts anything.
	dumpFile := filepath.Join(v.base, "accounts.sql")
	old := v.run("dump", "--backup", streamed.ID, "--pg-bin", bin, "--table", "pgbench_accounts", "--to-lsn", m2.LSN, "-f", dumpFile)
	if want := fmt.Sprintf("is PostgreSQL 15's and the backup is of PostgreSQL %d: install postgresql-client-%d", major, major); old.code != 1 || !strings.Contains(old.stderr, want) {
		t.Fatalf("dump with pg_dump 15 of a PostgreSQL %d backup: exit %d (want 1 and %q): %s", major, old.code, want, old.stderr)
	}
	if _, err := os.Stat(dumpFile); err == nil {
		t.Fatal("a refused dump left its file behind")
	}

	// A standby restored from the repository streams from the primary;
	// promoted, it starts timeline 2, which the streamer follows.
	st.stop()
	standbyDir := v.restore(streamed.ID, "--standby", "--primary-conninfo", p.ConnString("postgres"))
	postgresOwns(t, v.base)
	s := pgtest.StartOn(t, standbyDir, pgtest.Options{})
	s.WaitReady(t)
	st = v.startStreamer("--pg", p.ReplicationConnString(), "--pg", s.ReplicationConnString())
	waitSlotActive(t, p, "pgvault")
	m5 := mark(p, "m5 on timeline 1")
	waitStored(t, p, "pgvault")
	waitFor(t, 60*time.Second, "the standby to replay "+m5.LSN, func() (bool, error) {
		return s.QueryInt(t, "SELECT count(*) WHERE pg_last_wal_replay_lsn() >= $1::pg_lsn", m5.LSN) == 1, nil
	})
	p.Stop(t, "fast")
	waitSlotActive(t, s, "pgvault")
	// The streamer, failed over to the standby, stores what the standby
	// holds of the primary's last segment before the promotion. The
	// standby must not have taken the repository's zero-padded partial of
	// that segment over what it streamed: its cascading replication would
	// store the zeros, and the promotion's last read would PANIC.
	waitConfirmed(t, s, "pgvault", s.QueryString(t, "SELECT pg_last_wal_receive_lsn()::text"))
	s.Promote(t)
	s.WaitRecoveryDone(t)
	m6 := mark(s, "m6 on timeline 2")
	upToM6 := len(want)
	// A record after m6, so that a recovery to m6's LSN finds where to stop.
	mark(s, "m7 on timeline 2")
	waitStored(t, s, "pgvault")
	st.stop()
	if !strings.Contains(st.log.String(), "timeline=2") {
		t.Fatalf("the streamer never streamed timeline 2:\n%s", st.log)
	}
	if r := v.run("wal", "check"); r.code != 0 {
		t.Fatalf("wal check across the timeline switch: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	latest := v.restore("latest")
	postgresOwns(t, v.base)
	r := pgtest.StartOn(t, latest, pgtest.Options{Settings: map[string]string{"archive_mode": "off"}})
	r.WaitRecoveryDone(t)
	got := r.MarkerIDs(t)
	for _, id := range want {
		if !slices.Contains(got, id) {
			t.Fatalf("marker %d missing after the restore across the timeline switch (have %v, want %v)", id, got, want)
		}
	}
	r.Stop(t, "fast")

	// A synthetic backup of the streamed backup, rolled forward across the
	// timeline switch to m6 by this major's server: restored, it holds
	// every marker.
	synth := syntheticBackup(t, v, "--from", streamed.ID, "--to-lsn", m6.LSN, "--pg-bin", bin)
	postgresOwns(t, v.base)
	sdir := v.restore(synth.ID, "--to-immediate", "--target-action", "promote")
	postgresOwns(t, v.base)
	sr := pgtest.StartOn(t, sdir, pgtest.Options{Settings: map[string]string{"archive_mode": "off"}})
	sr.WaitRecoveryDone(t)
	if n := sr.CountMarkers(t); n != int64(upToM6) {
		t.Fatalf("the synthetic backup across the timeline switch has %d markers, want %d", n, upToM6)
	}
	sr.Stop(t, "fast")

	// A backup of an idle server: no WAL traffic after its stop, so its
	// last segment stays in progress (from 17 on, the end-of-backup record
	// is in it). The streamer's partial segment is what completes it.
	s.Checkpoint(t)
	st = v.startStreamer("--pg", s.ReplicationConnString())
	waitSlotActive(t, s, "pgvault")
	waitStored(t, s, "pgvault")
	idle := v.backup(s)
	st.stop()
	postgresOwns(t, v.base)
	idleDir := v.restore(idle.ID, "--to-immediate", "--target-action", "promote")
	ir := pgtest.StartOn(t, idleDir, pgtest.Options{Settings: map[string]string{"archive_mode": "off"}})
	ir.WaitRecoveryDone(t)
	if n := ir.CountMarkers(t); n != int64(len(want)) {
		t.Fatalf("the idle server's backup has %d markers, want %d", n, len(want))
	}
}

// findingOf is the message of a preflight finding ("" when absent).
func findingOf(rep preflightDoc, setting string) string {
	for _, f := range rep.Findings {
		if f.Setting == setting {
			return f.Status + ": " + f.Message
		}
	}
	return ""
}

// wantMarkers starts PostgreSQL on a restored data directory, waits for
// the end of recovery, checks the markers and stops it.
func wantMarkers(t *testing.T, dir string, notes ...string) {
	t.Helper()
	c := pgtest.StartOn(t, dir, pgtest.Options{Settings: map[string]string{"archive_mode": "off"}})
	c.WaitRecoveryDone(t)
	wantNotes(t, c, notes...)
	c.Stop(t, "fast")
}

// wantSameTree compares two data directory trees path by path (mode,
// size, owner, time, link target), leaving out what a restore writes of
// its own.
func wantSameTree(t *testing.T, want, got string) {
	t.Helper()
	w, g := listTree(t, want), listTree(t, got)
	for p, we := range w {
		if ge, ok := g[p]; !ok || ge != we {
			t.Fatalf("%s: the browse mount shows %+v, the restore wrote %+v", p, ge, we)
		}
	}
	for p := range g {
		if _, ok := w[p]; !ok {
			t.Fatalf("the browse mount shows %s, which the restore did not write", p)
		}
	}
	if len(w) < 500 {
		t.Fatalf("only %d paths in the restored tree", len(w))
	}
	if _, err := os.Stat(filepath.Join(got, "PG_VERSION")); err != nil {
		t.Fatal(err)
	}
}

// TestUpgradedClusterIsRefused: after pg_upgrade the cluster has another
// system identifier and another major. An agent still pointed at the old
// repository refuses its WAL and backups (version_mismatch_error, naming
// both systems and the fix) instead of mixing two clusters in one
// repository; the old backups stay restorable.
func TestUpgradedClusterIsRefused(t *testing.T) {
	old := pgtest.Start(t, pgtest.Options{})
	old.CreateMarkers(t)
	v := newPostgresVault(t)
	b := v.backup(old, "--standalone") // restorable without a WAL archive
	old.Stop(t, "fast")
	upgraded := pgtest.Start(t, pgtest.Options{Major: pgtest.NewerMajors[0]})

	s := newAgentSetup(t, upgraded, v)
	s.write(t, upgraded.ReplicationConnString(), "    basebackup: {interval: 1h}\n")
	a := s.start(t)
	al := waitAlert(t, s.alerts, "version_mismatch_error", true, 60*time.Second)
	for _, want := range []string{"another cluster, or was upgraded", fmt.Sprintf("(version %d)", pgtest.NewerMajors[0]), "(version 15)", "pgvault repo init"} {
		if !strings.Contains(al.Message, want) {
			t.Fatalf("version_mismatch_error says %q, want %q in it", al.Message, want)
		}
	}
	if code, _ := a.stop(); code != 0 {
		t.Fatalf("agent exit %d", code)
	}
	var list []struct {
		ID string `json:"id"`
	}
	v.json(&list, "list")
	if len(list) != 1 || list[0].ID != b.ID {
		t.Fatalf("the repository holds %+v, want only the old cluster's backup %s", list, b.ID)
	}
	if r := v.run("verify", b.ID); r.code != 0 {
		t.Fatalf("the old backup no longer verifies: exit %d %s", r.code, r.stderr)
	}
}

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// syntheticDoc is the part of `backup --synthetic --output json` read here.
type syntheticDoc struct {
	ID            string `json:"id"`
	Parent        string `json:"parent"`
	Method        string `json:"method"`
	StartLSN      string `json:"start_lsn"`
	StopLSN       string `json:"stop_lsn"`
	ConsistentLSN string `json:"consistent_lsn"`
	BytesRead     int64  `json:"bytes_read"`
	StoredBytes   int64  `json:"stored_bytes"`
	Files         struct {
		Created, Modified, Removed int
	} `json:"changed_files"`
}

// TestSyntheticBackup rolls a base backup forward from the repository's
// WAL, twice (the second from the first), with no connection to the
// database: each synthetic backup, restored, must be the cluster a real
// base backup recovered to the same LSN is (pg_dumpall identical), pass
// pg_amcheck --heapallindexed and pg_checksums --check, and read only what
// the replay changed.
func TestSyntheticBackup(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{Settings: map[string]string{"max_prepared_transactions": "5"}})
	c.CreateMarkers(t)
	c.PgbenchInit(t, 5)
	v := newPostgresVault(t)
	st := v.startStreamer("--pg", c.ReplicationConnString())
	waitSlotActive(t, c, "pgvault")
	b1 := v.backup(c)

	// The replayed window: new relfilenodes, new and dropped databases and
	// tables, unlogged tables, sequences, large objects, a prepared
	// transaction left open.
	m1 := c.InsertMarker(t, "after b1")
	c.Pgbench(context.Background(), t, "-c", "2", "-t", "300")
	for _, sql := range []string{
		"CREATE DATABASE db_wal_log STRATEGY wal_log",
		"CREATE DATABASE db_file_copy STRATEGY file_copy",
		"CREATE TABLE big AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 20000) g",
		"CREATE INDEX big_g ON big (g)",
		"CREATE UNLOGGED TABLE scratch AS SELECT g FROM generate_series(1, 1000) g",
		"CREATE SEQUENCE seq1",
		"SELECT nextval('seq1') FROM generate_series(1, 42)",
		"SELECT lo_from_bytea(0, decode(repeat('ab', 5000), 'hex'))",
		"TRUNCATE pgbench_history",
		"VACUUM FULL pgbench_tellers",
		"CLUSTER pgbench_branches USING pgbench_branches_pkey",
		"CREATE TABLE dropped AS SELECT 1 AS x",
		"DROP TABLE dropped",
		"BEGIN; CREATE TABLE in_prepared (x int); PREPARE TRANSACTION 'left open'",
	} {
		c.Exec(t, sql)
	}
	c.Exec(t, "DROP DATABASE db_file_copy")
	m2 := c.InsertMarker(t, "target 1")
	c.SwitchWAL(t)
	c.InsertMarker(t, "after target 1")
	waitStored(t, c, "pgvault")

	s1 := syntheticBackup(t, v, "--from", b1.ID, "--to-lsn", m2.LSN)
	if s1.Parent != b1.ID || s1.Method != "synthetic" {
		t.Fatalf("synthetic backup: parent %s method %q, want %s synthetic", s1.Parent, s1.Method, b1.ID)
	}
	if s1.Files.Created == 0 || s1.Files.Modified == 0 {
		t.Fatalf("the replay changed nothing? %+v", s1.Files)
	}
	compareWithReplay(t, v, s1, b1.ID, m2.LSN, m1.ID)

	// A second synthetic backup on the first, to the newest WAL.
	c.Pgbench(context.Background(), t, "-c", "2", "-t", "200")
	c.Exec(t, "UPDATE big SET pad = repeat('y', 500) WHERE g % 100 = 0")
	m3 := c.InsertMarker(t, "target 2")
	c.SwitchWAL(t)
	waitStored(t, c, "pgvault")
	s2 := syntheticBackup(t, v, "--from", s1.ID, "--to-lsn", m3.LSN)
	if s2.Parent != s1.ID {
		t.Fatalf("second synthetic backup's parent %s, want %s", s2.Parent, s1.ID)
	}
	compareWithReplay(t, v, s2, b1.ID, m3.LSN, m1.ID)

	// The default target: the start of the newest complete segment, which
	// must be past s2's end.
	c.Pgbench(context.Background(), t, "-c", "2", "-t", "100")
	c.SwitchWAL(t)
	c.InsertMarker(t, "in the newest segment")
	c.SwitchWAL(t)
	waitStored(t, c, "pgvault")
	s3 := syntheticBackup(t, v)
	if s3.Parent != s2.ID {
		t.Fatalf("--from latest chose %s, want the newest backup %s", s3.Parent, s2.ID)
	}
	st.stop()

	// list shows the kind and parent; the repository checks clean.
	var list []struct {
		ID     string `json:"id"`
		Method string `json:"method"`
		Parent string `json:"parent"`
	}
	v.json(&list, "list")
	if len(list) != 4 || list[1].Method != "synthetic" || list[1].Parent != b1.ID {
		t.Fatalf("list: %+v", list)
	}
	if r := v.run("repo", "check", "--read-data"); r.code != 0 {
		t.Fatalf("repo check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// syntheticBackup runs `backup --synthetic` and checks that it took no
// database connection (it is given none).
func syntheticBackup(t *testing.T, v *vault, args ...string) syntheticDoc {
	t.Helper()
	var doc syntheticDoc
	start := time.Now()
	if !slices.Contains(args, "--pg-bin") {
		args = append(args, "--pg-bin", pgtest.BinDir)
	}
	v.json(&doc, append([]string{"backup", "--synthetic"}, args...)...)
	t.Logf("synthetic backup %s from %s: %.1fs, %d bytes read from the replay, %d stored, files %+v",
		doc.ID[:8], doc.Parent[:8], time.Since(start).Seconds(), doc.BytesRead, doc.StoredBytes, doc.Files)
	return doc
}

// compareWithReplay restores the synthetic backup (to its consistency
// point) and the real base backup recovered to the same LSN, and compares
// them: pg_dumpall of both is identical, and the synthetic one passes
// pg_amcheck --heapallindexed and, stopped, pg_checksums --check.
func compareWithReplay(t *testing.T, v *vault, s syntheticDoc, realID, lsn string, firstMarker int64) {
	t.Helper()
	postgresOwns(t, v.base)
	synth := v.restore(s.ID, "--to-immediate", "--target-action", "promote")
	replayed := v.restore(realID, "--to-lsn", lsn, "--target-action", "promote")
	postgresOwns(t, v.base)
	off := map[string]string{"archive_mode": "off", "max_prepared_transactions": "5"}
	rs := pgtest.StartOn(t, synth, pgtest.Options{Settings: off})
	rs.WaitRecoveryDone(t)
	rr := pgtest.StartOn(t, replayed, pgtest.Options{Settings: off})
	rr.WaitRecoveryDone(t)
	ds, dr := dumpAll(t, rs), dumpAll(t, rr)
	if ds != dr {
		t.Fatalf("pg_dumpall of the synthetic backup %s differs from the real backup recovered to %s (%d vs %d bytes)", s.ID[:8], lsn, len(ds), len(dr))
	}
	if n := rs.QueryInt(t, "SELECT count(*) FROM pg_prepared_xacts"); n != 1 {
		t.Fatalf("the synthetic backup has %d prepared transactions, want the one left open", n)
	}
	if n := rs.QueryInt(t, "SELECT count(*) FROM "+pgtest.MarkerTable+" WHERE id >= $1", firstMarker); n < 2 {
		t.Fatalf("the synthetic backup has %d markers since b1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, filepath.Join(pgtest.BinDir, "pg_amcheck"), "-h", "127.0.0.1", "-p", fmt.Sprint(rs.Port()),
		"-U", "postgres", "--install-missing", "--all", "--heapallindexed").CombinedOutput(); err != nil {
		t.Fatalf("pg_amcheck --heapallindexed on the synthetic backup: %v\n%s", err, out)
	}
	rs.Stop(t, "fast")
	rr.Stop(t, "fast")
	if out, err := pgtest.RunAsPostgres(ctx, "pg_checksums", "--check", "-D", synth).CombinedOutput(); err != nil {
		t.Fatalf("pg_checksums --check on the synthetic backup: %v\n%s", err, out)
	}
}

// restrictLine is pg_dumpall's per-run random \restrict key (15.14+).
var restrictLine = regexp.MustCompile(`(?m)^\\(un)?restrict .*$`)

// dumpAll is pg_dumpall's output, without the lines that differ on every
// run.
func dumpAll(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(pgtest.BinDir, "pg_dumpall"), "-h", "127.0.0.1", "-p", fmt.Sprint(c.Port()), "-U", "postgres").Output()
	if err != nil {
		t.Fatalf("pg_dumpall: %v", err)
	}
	return strings.TrimSpace(restrictLine.ReplaceAllString(string(out), ""))
}

// TestAgentSyntheticBackups: an agent with real base backups every hour
// and synthetic ones every few seconds takes one real backup, then rolls
// it forward from the WAL it streams (skipping quietly while there is no
// new WAL), records each synthetic backup as a passed drill of its parent,
// and retention keeps the real backup (real_basebackup_count_min) while
// the count rule alone would drop it.
func TestAgentSyntheticBackups(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.CreateMarkers(t)
	c.PgbenchInit(t, 1)
	v := newPostgresVault(t)
	s := newAgentSetup(t, c, v)
	s.write(t, c.ReplicationConnString(), `    basebackup: {interval: 1h, fast_checkpoint: true}
    synthetic: {interval: 3s, pg_bin: `+pgtest.BinDir+`}
    retention: {basebackup_count: 1, basebackup_count_min: 1, real_basebackup_count_min: 1, grace: 15m}
`)
	a := s.start(t)
	st := a.waitState("the first base backup", 2*time.Minute, func(st agentState) bool { return st.Sites["main"].Backup.Count >= 1 })
	realID := st.Sites["main"].Backup.Last.ID
	for round := range 2 {
		c.Pgbench(context.Background(), t, "-c", "2", "-t", "200")
		c.InsertMarker(t, fmt.Sprintf("round %d", round))
		c.SwitchWAL(t)
		c.InsertMarker(t, fmt.Sprintf("round %d, next segment", round))
		c.SwitchWAL(t)
		want := round + 1
		// Retention runs after each synthetic backup, once Taken counts it.
		a.waitState(fmt.Sprintf("synthetic backup %d and retention after it", want), 3*time.Minute, func(st agentState) bool {
			syn, prune := st.Sites["main"].Synthetic, st.Sites["main"].Prune
			return syn.Taken >= want && prune.Last != nil && !prune.Last.Before(*syn.Last)
		})
	}
	st = a.readState()
	site := st.Sites["main"]
	if site.Synthetic.LastError != "" || site.Drill.OK == nil || !*site.Drill.OK || !strings.Contains(site.Drill.Message, "synthetic backup") {
		t.Fatalf("after two synthetic backups: synthetic %+v, drill %+v", site.Synthetic, site.Drill)
	}
	if site.Backup.Last == nil || site.Backup.Last.ID != realID || site.Backup.Taken != 1 {
		t.Fatalf("the real backup schedule moved: %+v", site.Backup)
	}
	if code, _ := a.stop(); code != 0 {
		t.Fatalf("agent exit %d", code)
	}
	var list []struct {
		ID     string `json:"id"`
		Method string `json:"method"`
	}
	v.json(&list, "list")
	var real, synthetic int
	for _, b := range list {
		if b.Method == "synthetic" {
			synthetic++
		} else {
			real++
		}
	}
	// Retention ran after each synthetic backup: the newest one is kept
	// (basebackup_count 1), and the real one (real_basebackup_count_min).
	if real != 1 || synthetic != 1 || list[0].ID != realID {
		t.Fatalf("after retention: %+v", list)
	}
	if _, err := os.Stat(filepath.Join(s.alerts, "main", "synthetic_backup_failed")); err == nil {
		t.Fatal("synthetic_backup_failed is raised")
	}
}

// TestSyntheticBackupRefusals: what cannot give a correct backup stores
// nothing and says why in one line: a gap in the WAL (naming the
// segment), programs of another major, a target before the parent's end.
func TestSyntheticBackupRefusals(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.CreateMarkers(t)
	v := newPostgresVault(t)
	st := v.startStreamer("--pg", c.ReplicationConnString())
	waitSlotActive(t, c, "pgvault")
	b := v.backup(c)
	for i := range 3 {
		c.InsertMarker(t, fmt.Sprint("segment ", i))
		c.SwitchWAL(t)
	}
	waitStored(t, c, "pgvault")
	st.stop()
	countBackups := func() int {
		var list []struct{}
		v.json(&list, "list")
		return len(list)
	}

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"programs of another major", []string{"--pg-bin", pgtest.ServerBinDir(pgtest.NewerMajors[0])}, "holds the programs of PostgreSQL 16, and the backup is of PostgreSQL 15"},
		{"target before the parent's end", []string{"--pg-bin", pgtest.BinDir, "--to-lsn", "0/1000000"}, "after the target LSN 0/1000000"},
	}
	for _, tc := range cases {
		r := v.run(append([]string{"backup", "--synthetic", "--from", b.ID}, tc.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
			t.Fatalf("%s: exit %d, %q; want one line with %q", tc.name, r.code, r.stderr, tc.want)
		}
	}

	// A gap: a segment after the backup's end removed from the repository.
	seg := c.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_lsn() - 16*1024*1024*2)")
	gap := filepath.Join(v.repo, "wal", seg[:8], seg)
	if err := os.Remove(gap); err != nil {
		t.Fatalf("remove %s from the repository: %v", gap, err)
	}
	r := v.run("backup", "--synthetic", "--from", b.ID, "--pg-bin", pgtest.BinDir)
	if r.code == 0 || !strings.Contains(r.stderr, seg) {
		t.Fatalf("synthetic backup over a gap: exit %d, %q; want the missing segment %s named", r.code, r.stderr, seg)
	}
	if n := countBackups(); n != 1 {
		t.Fatalf("%d backups after the refusals, want only the parent", n)
	}

	// A tablespace created in the replayed WAL, at a folder of this host
	// (here: the live cluster's own tablespace): refused with one line,
	// and nothing written into that folder by the replay.
	c2 := pgtest.Start(t, pgtest.Options{})
	c2.CreateMarkers(t)
	v2 := newPostgresVault(t)
	st2 := v2.startStreamer("--pg", c2.ReplicationConnString())
	waitSlotActive(t, c2, "pgvault")
	b2 := v2.backup(c2)
	loc := c2.TablespaceDir(t)
	c2.Exec(t, fmt.Sprintf("CREATE TABLESPACE late LOCATION '%s'", loc))
	c2.Exec(t, "CREATE TABLE in_late TABLESPACE late AS SELECT g FROM generate_series(1, 1000) g")
	c2.SwitchWAL(t)
	c2.InsertMarker(t, "after")
	c2.SwitchWAL(t)
	waitStored(t, c2, "pgvault")
	st2.stop()
	before := listTree(t, loc)
	r = v2.run("backup", "--synthetic", "--from", b2.ID, "--pg-bin", pgtest.BinDir)
	if r.code == 0 || !strings.Contains(r.stderr, "the WAL creates a tablespace") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
		t.Fatalf("synthetic backup over CREATE TABLESPACE: exit %d, %q", r.code, r.stderr)
	}
	after := listTree(t, loc)
	for p, e := range after {
		if b, ok := before[p]; !ok || b.Size != e.Size || b.MTime != e.MTime {
			t.Fatalf("the replay changed the live tablespace's %s", p)
		}
	}
}

// TestSyntheticBackupKilled: kill -9 of backup --synthetic during the
// replay and during the store leaves no snapshot and a repository that
// checks clean; the next synthetic backup succeeds.
func TestSyntheticBackupKilled(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.CreateMarkers(t)
	c.PgbenchInit(t, 5)
	v := newPostgresVault(t)
	st := v.startStreamer("--pg", c.ReplicationConnString())
	waitSlotActive(t, c, "pgvault")
	b := v.backup(c)
	c.Pgbench(context.Background(), t, "-c", "2", "-t", "2000")
	c.Exec(t, "CREATE TABLE filler AS SELECT g, repeat('z', 300) AS pad FROM generate_series(1, 200000) g")
	c.SwitchWAL(t)
	c.InsertMarker(t, "after the switch")
	c.SwitchWAL(t)
	waitStored(t, c, "pgvault")
	st.stop()

	for _, phase := range []string{"recovery", "store"} {
		p := v.start("--log-level", "info", "backup", "--synthetic", "--from", b.ID, "--pg-bin", pgtest.BinDir)
		waitFor(t, 3*time.Minute, "backup --synthetic to reach its "+phase+" phase", func() (bool, error) {
			select {
			case <-p.done:
				t.Fatalf("backup --synthetic ended before its %s phase:\n%s", phase, p.out)
			default:
			}
			return strings.Contains(p.out.String(), "phase="+phase), nil
		})
		if !p.kill() {
			t.Fatalf("backup --synthetic ended before the kill in its %s phase", phase)
		}
		verifyServersGone(t)
		var list []struct{}
		v.json(&list, "list")
		if len(list) != 1 {
			t.Fatalf("kill -9 in the %s phase left %d backups, want only the parent", phase, len(list))
		}
		if r := v.run("repo", "check", "--read-data"); r.code != 0 {
			t.Fatalf("repo check after kill -9 in the %s phase: exit %d\n%s%s", phase, r.code, r.stdout, r.stderr)
		}
	}
	s := syntheticBackup(t, v, "--from", b.ID)
	if s.Parent != b.ID {
		t.Fatalf("after the kills: %+v", s)
	}
}

// verifyServersGone waits until the PostgreSQL a killed boot started on
// its mount has ended by itself, every process of it (no process may hold
// the mount's FUSE connection, so the killed pgvault took the connection
// with it and the server failed on its files), then unmounts the stale
// mount.
func verifyServersGone(t *testing.T) {
	t.Helper()
	waitFor(t, 2*time.Minute, "the killed boot's PostgreSQL to end by itself", func() (bool, error) {
		var left []string
		postmasters := map[string]bool{}
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err == nil && strings.Contains(string(cmdline), "pgvault-verify-") {
				postmasters[e.Name()] = true
				left = append(left, e.Name()+" "+strings.ReplaceAll(string(cmdline), "\x00", " "))
			}
		}
		for _, e := range entries {
			stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...: comm may hold blanks, so split after ')'.
			f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
			if len(f) > 1 && postmasters[f[1]] {
				cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
				left = append(left, e.Name()+" "+string(cmdline))
			}
		}
		if len(left) > 0 {
			return false, fmt.Errorf("still running: %s", strings.Join(left, "; "))
		}
		return true, nil
	})
	mounts, _ := filepath.Glob(filepath.Join(os.TempDir(), "pgvault-verify-*", "data"))
	for _, m := range mounts {
		if isMounted(m) {
			exec.Command("umount", "-l", m).Run()
		}
	}
}

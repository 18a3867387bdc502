package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// richCluster is pgbench scale 10 plus what a real database has: TOAST
// data, a second database, a tablespace and an unlogged table.
func richCluster(t *testing.T) (*pgtest.Cluster, string) {
	t.Helper()
	return richClusterWith(t, pgtest.Options{})
}

func richClusterWith(t *testing.T, opts pgtest.Options) (*pgtest.Cluster, string) {
	t.Helper()
	c := pgtest.Start(t, opts)
	c.PgbenchInit(t, 10)
	tsDir := c.TablespaceDir(t)
	c.Exec(t, "CREATE TABLESPACE extra LOCATION '"+tsDir+"'")
	c.Exec(t, "CREATE TABLE toasty (id int PRIMARY KEY, doc text) TABLESPACE extra")
	c.Exec(t, "INSERT INTO toasty SELECT g, repeat(md5(g::text), 400) FROM generate_series(1, 2000) g")
	c.Exec(t, "CREATE UNLOGGED TABLE scratch AS SELECT g AS id FROM generate_series(1, 10000) g")
	c.Exec(t, "CREATE DATABASE second")
	conn := c.Conn(t, "second")
	if _, err := conn.Exec(context.Background(), "CREATE TABLE notes AS SELECT g AS id, 'note ' || g AS body FROM generate_series(1, 5000) g"); err != nil {
		t.Fatal(err)
	}
	return c, tsDir
}

// TestBackupRestoreUnderLoad streams the files with BASE_BACKUP (the
// method when pgvault runs on another machine); TestLocalBackupUnderLoad
// reads them from the disk.
func TestBackupRestoreUnderLoad(t *testing.T) {
	c, tsDir := richCluster(t)
	v := newVault(t, "")
	ctx, stop := context.WithCancel(context.Background())
	wait := c.PgbenchBackground(ctx, t, "-c", "2", "-T", "600")
	rep := v.backup(c, "--label", "under load", "--method", "stream")
	stop()
	wait()
	if rep.BytesRead < 150<<20 || rep.StoredBytes == 0 || rep.Method != "stream" {
		t.Fatalf("backup report: %+v", rep)
	}
	var list []struct {
		ID    string `json:"id"`
		Label string `json:"label"`
	}
	v.json(&list, "list")
	if len(list) != 1 || list[0].ID != rep.ID || list[0].Label != "under load" {
		t.Fatalf("list = %+v", list)
	}
	newTS := filepath.Join(pgtest.TempDir(t), "extra")
	target := v.restore(rep.ID, "--no-recovery-config", "--tablespace-map", tsDir+"="+newTS)
	verifyBackup(t, target)
	link, err := os.Readlink(filepath.Join(target, "pg_tblspc", firstEntry(t, filepath.Join(target, "pg_tblspc"))))
	if err != nil || link != newTS {
		t.Fatalf("tablespace link = %q, %v; want %s", link, err, newTS)
	}
	fi, err := os.Stat(target)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data directory mode %v, %v", fi.Mode(), err)
	}
	v.must("repo", "check", "--read-data")
}

// TestLocalBackupUnderLoad: a backup that reads the data directory
// itself while pgbench writes restores, with the archived WAL, to a
// consistent cluster: pgbench's balances agree, the indexes pass amcheck,
// the unlogged table comes back empty, and pg_verifybackup accepts the
// backup_manifest pgvault wrote.
func TestLocalBackupUnderLoad(t *testing.T) {
	v := newPITRVault(t)
	c, tsDir := richClusterWith(t, pgtest.Options{Settings: v.archiveSettings()})
	c.CreateMarkers(t)
	ctx, stop := context.WithCancel(context.Background())
	wait := c.PgbenchBackground(ctx, t, "-c", "2", "-T", "600")
	var rep backupReport
	v.json(&rep, "--pg", c.ReplicationConnString(), "backup", "--fast-checkpoint", "--method", "local")
	stop()
	wait()
	if rep.Method != "local" || rep.BytesRead < 150<<20 || rep.ChecksumFailures || len(rep.Warnings) != 0 {
		t.Fatalf("backup report: %+v", rep)
	}
	pitrMarker(t, c, "after the backup")
	pitrSwitchAndWait(t, c)
	newTS := filepath.Join(pgtest.TempDir(t), "extra")
	pgOwn(t, filepath.Dir(newTS))
	dir, _ := v.restore(t, "", "--tablespace-map", tsDir+"="+newTS)
	verifyBackup(t, dir)
	r := startRestored(t, dir, nil)
	waitPromoted(t, r)
	wantNotes(t, r, "after the backup")
	sums := r.QueryString(t, `SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || (SELECT sum(tbalance) FROM pgbench_tellers) || ' ' ||
		(SELECT sum(bbalance) FROM pgbench_branches) || ' ' || (SELECT coalesce(sum(delta), 0) FROM pgbench_history)`)
	if f := strings.Fields(sums); len(f) != 4 || f[0] != f[1] || f[1] != f[2] || f[2] != f[3] || f[0] == "0" {
		t.Fatalf("pgbench balances disagree after the restore (accounts, tellers, branches, history): %s", sums)
	}
	r.Exec(t, "CREATE EXTENSION amcheck")
	r.Exec(t, "SELECT bt_index_check(c.oid, true) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree'")
	if n := r.QueryInt(t, "SELECT count(*) FROM toasty WHERE length(doc) = 12800"); n != 2000 {
		t.Fatalf("toasty has %d intact rows", n)
	}
	if n := r.QueryInt(t, "SELECT count(*) FROM scratch"); n != 0 {
		t.Fatalf("unlogged table has %d rows after recovery", n)
	}
	t.Logf("local backup %s: %d bytes read; balances %s", rep.ID[:8], rep.BytesRead, sums)
}

func firstEntry(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("%s: %v (%d entries)", dir, err, len(entries))
	}
	return entries[0].Name()
}

func TestStandaloneBackupStartsWithoutArchive(t *testing.T) {
	c, tsDir := richCluster(t)
	c.Exec(t, "CREATE TABLE before_backup AS SELECT g AS id FROM generate_series(1, 1234) g")
	// Streamed, BASE_BACKUP sends the WAL; read locally, it is copied from
	// the server's pg_wal after pg_backup_stop.
	for _, method := range []string{"local", "stream"} {
		t.Run(method, func(t *testing.T) { testStandalone(t, c, tsDir, method) })
	}
}

func testStandalone(t *testing.T, c *pgtest.Cluster, tsDir, method string) {
	v := newVault(t, "")
	ctx, stop := context.WithCancel(context.Background())
	wait := c.PgbenchBackground(ctx, t, "-c", "2", "-T", "600")
	rep := v.backup(c, "--standalone", "--method", method)
	stop()
	wait()
	if rep.Method != method {
		t.Fatalf("the backup ran with method %q, want %s", rep.Method, method)
	}
	target := v.restore("latest", "--tablespace-map", tsDir+"="+filepath.Join(pgtest.TempDir(t), "ts"))
	verifyBackup(t, target)
	r := pgtest.StartOn(t, target, pgtest.Options{})
	r.WaitRecoveryDone(t)
	if n := r.QueryInt(t, "SELECT count(*) FROM before_backup"); n != 1234 {
		t.Fatalf("before_backup has %d rows, want 1234", n)
	}
	if n := r.QueryInt(t, "SELECT count(*) FROM pgbench_accounts"); n != 1_000_000 {
		t.Fatalf("pgbench_accounts has %d rows", n)
	}
	if n := r.QueryInt(t, "SELECT count(*) FROM toasty WHERE length(doc) = 12800"); n != 2000 {
		t.Fatalf("toasty has %d intact rows", n)
	}
	// The unlogged table comes back empty, as PostgreSQL resets it.
	if n := r.QueryInt(t, "SELECT count(*) FROM scratch"); n != 0 {
		t.Fatalf("unlogged table has %d rows after recovery", n)
	}
	conn := r.Conn(t, "second")
	var notes int64
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM notes").Scan(&notes); err != nil || notes != 5000 {
		t.Fatalf("second database: %d notes, %v", notes, err)
	}
	t.Logf("standalone %s backup %s: %d bytes read, %d stored", method, rep.ID[:8], rep.BytesRead, rep.StoredBytes)
	r.Stop(t, "fast")
}

func TestSecondBackupAfterFivePercentChange(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 10)
	v := newVault(t, "")
	first := v.backup(c)
	// A contiguous 5% of pgbench_accounts (50,000 of 1,000,000 rows).
	c.Exec(t, "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 50000")
	c.Checkpoint(t)
	second := v.backup(c)
	ratio := float64(second.StoredBytes) / float64(first.StoredBytes)
	t.Logf("first backup stored %d bytes, second after a 5%% change %d bytes: %.1f%%", first.StoredBytes, second.StoredBytes, 100*ratio)
	if ratio > 0.15 {
		t.Fatalf("second backup stored %.1f%% of the first, want <= 15%%", 100*ratio)
	}
}

func TestBackupChecksumFailuresAreWarnings(t *testing.T) {
	for _, method := range []string{"stream", "local"} {
		t.Run(method, func(t *testing.T) { testChecksumFailures(t, method) })
	}
}

func testChecksumFailures(t *testing.T, method string) {
	c := pgtest.Start(t, pgtest.Options{})
	c.Exec(t, "CREATE TABLE victim AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g")
	rel := c.QueryString(t, "SELECT pg_relation_filepath('victim')")
	c.Stop(t, "fast")
	path := filepath.Join(c.DataDir(), rel)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("corrupted by the test"), 8192+4000) // second page, past its header
	f.Close()
	c.Start(t)
	v := newVault(t, "")
	r := v.run("--output", "json", "--pg", c.ReplicationConnString(), "backup", "--fast-checkpoint", "--method", method)
	if r.code != 3 {
		t.Fatalf("backup of a corrupt cluster: exit %d (want 3)\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "checksum") || !strings.Contains(r.stderr, "checksum") {
		t.Fatalf("warnings missing:\nstdout %s\nstderr %s", r.stdout, r.stderr)
	}
	var list []map[string]any
	v.json(&list, "list")
	if len(list) != 1 {
		t.Fatalf("the backup with warnings is not listed: %v", list)
	}
}

func TestBackupBadInput(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{Settings: map[string]string{"max_wal_senders": "1", "password_encryption": "scram-sha-256"}})
	c.Exec(t, "CREATE ROLE alice LOGIN REPLICATION PASSWORD 'right'")
	c.Exec(t, "CREATE ROLE bob LOGIN")
	prependHBA(t, c, "alice", "host replication alice 127.0.0.1/32 scram-sha-256\n")
	v := newVault(t, "")
	port := fmt.Sprint(c.Port())

	// Hold the only WAL sender for the "exhausted" case.
	holder := func() *pgconn.PgConn {
		conn, err := pgconn.Connect(context.Background(), c.ReplicationConnString())
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}

	tests := []struct {
		name  string
		pg    string
		setup func() func()
		want  string
	}{
		{"unreachable", "host=127.0.0.1 port=1 user=postgres", nil, "connection refused"},
		{"wrong password", "host=127.0.0.1 port=" + port + " user=alice password=wrong", nil, "rejected the password"},
		{"no replication attribute", "host=127.0.0.1 port=" + port + " user=bob", nil, "ALTER ROLE"},
		{"wal senders exhausted", c.ReplicationConnString(), func() func() {
			h := holder()
			return func() { h.Close(context.Background()) }
		}, "max_wal_senders"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				defer tt.setup()()
			}
			r := v.run("--pg", tt.pg, "backup")
			if r.code != 1 {
				t.Fatalf("exit %d, want 1: %s", r.code, r.stderr)
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tt.want) {
				t.Fatalf("stderr should be one line containing %q:\n%s", tt.want, r.stderr)
			}
			if strings.Contains(r.stderr, "wrong") && tt.name == "wrong password" {
				t.Fatalf("the password leaked into the message: %s", r.stderr)
			}
		})
	}

	t.Run("restore into a non-empty target", func(t *testing.T) {
		rep := v.backup(c)
		target := t.TempDir()
		os.WriteFile(filepath.Join(target, "precious"), []byte("x"), 0o600)
		r := v.run("restore", rep.ID, "--target", target)
		if r.code != 1 || !strings.Contains(r.stderr, "not empty") {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		if data, _ := os.ReadFile(filepath.Join(target, "precious")); string(data) != "x" {
			t.Fatal("restore touched the existing file")
		}
	})
}

func TestKilledBackupLeavesNothingAndIsReused(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 10)
	v := newVault(t, "")
	// Throttled so that the kill lands mid-stream.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() {
		done <- v.runCtx(ctx, "--pg", c.ReplicationConnString(), "backup", "--fast-checkpoint", "--max-rate", "8192")
	}()
	// Kill it once it has indexed two packs (its data is reusable only
	// once indexed; at 8 MB/s that is about 12 s into its 22): the next
	// backup must find them.
	waitFor(t, time.Minute, "the backup to index two packs", func() (bool, error) {
		select {
		case r := <-done:
			t.Fatalf("the backup ended (exit %d) before it was killed:\n%s%s", r.code, r.stdout, r.stderr)
		default:
		}
		n := countObjects(t, filepath.Join(v.repo, "index"))
		return n >= 2, fmt.Errorf("%d index objects", n)
	})
	killPgvault(t, "backup")
	cancel()
	<-done
	var list []map[string]any
	v.json(&list, "list")
	if len(list) != 0 {
		t.Fatalf("a killed backup is listed: %v", list)
	}
	v.must("repo", "check", "--read-data")
	// The next backup succeeds and reuses what the killed one uploaded.
	var rep struct {
		Chunks    int64 `json:"chunks"`
		NewChunks int64 `json:"new_chunks"`
	}
	v.json(&rep, "--pg", c.ReplicationConnString(), "backup", "--fast-checkpoint")
	t.Logf("after a killed backup, the next one stored %d new of %d chunks", rep.NewChunks, rep.Chunks)
	if rep.NewChunks >= rep.Chunks*9/10 {
		t.Fatalf("too little of the killed backup was reused (%d of %d chunks new)", rep.NewChunks, rep.Chunks)
	}
	v.json(&list, "list")
	if len(list) != 1 {
		t.Fatalf("list after the second backup: %v", list)
	}
	v.must("repo", "check")
}

// countObjects counts the objects in a folder of a file repository
// (temporary files of unfinished saves are none).
func countObjects(t *testing.T, dir string) int {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".tmp-") {
			n++
		}
	}
	return n
}

// killPgvault sends SIGKILL to the running pgvault process with the given
// command argument.
func killPgvault(t *testing.T, command string) {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 1 && args[0] == pgvaultBin && contains(args, command) {
			var pid int
			fmt.Sscan(e.Name(), &pid)
			syscall.Kill(pid, syscall.SIGKILL)
			return
		}
	}
	t.Fatalf("no running pgvault %s to kill", command)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TestBackupMethodChoice: --method auto reads locally only when this
// machine holds the cluster the server reports, and says nothing when it
// streams instead; --method local refuses, naming the reason.
func TestBackupMethodChoice(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.Exec(t, "CREATE ROLE streamer LOGIN REPLICATION")
	v := newVault(t, "")
	other := pgtest.TempDir(t)
	os.MkdirAll(filepath.Join(other, "global"), 0o700)
	control, err := os.ReadFile(filepath.Join(c.DataDir(), "global", "pg_control"))
	if err != nil {
		t.Fatal(err)
	}
	control[0] ^= 0xff // another system identifier
	os.WriteFile(filepath.Join(other, "global", "pg_control"), control, 0o600)
	streamer := strings.Replace(c.ReplicationConnString(), "user=postgres", "user=streamer", 1)

	tests := []struct {
		name   string
		pg     string
		args   []string
		method string // what auto chose; "" for the failing cases
		code   int
		want   string
	}{
		{"auto, on the database host", c.ReplicationConnString(), nil, "local", 0, ""},
		{"auto, another cluster at --pgdata", c.ReplicationConnString(), []string{"--pgdata", other}, "stream", 0, ""},
		{"auto, no such folder", c.ReplicationConnString(), []string{"--pgdata", filepath.Join(other, "nope")}, "stream", 0, ""},
		{"auto, a role without the backup functions", streamer, nil, "stream", 0, ""},
		{"auto, standalone", c.ReplicationConnString(), []string{"--standalone"}, "local", 0, ""},
		{"local and standalone", c.ReplicationConnString(), []string{"--method", "local", "--standalone"}, "local", 0, ""},
		{"local and max rate", c.ReplicationConnString(), []string{"--method", "local", "--max-rate", "1024"}, "", 2, "--method stream"},
		{"local, another cluster", c.ReplicationConnString(), []string{"--method", "local", "--pgdata", other}, "", 1, "holds cluster"},
		{"local, a role without the backup functions", streamer, []string{"--method", "local"}, "", 1, "pg_backup_start"},
		{"unknown method", c.ReplicationConnString(), []string{"--method", "rsync"}, "", 2, "auto, stream or local"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := v.run(append([]string{"--output", "json", "--pg", tt.pg, "backup", "--fast-checkpoint"}, tt.args...)...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d\n%s\n%s", r.code, tt.code, r.stdout, r.stderr)
			}
			if tt.code != 0 {
				if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); len(lines) != 1 || !strings.Contains(r.stderr, tt.want) {
					t.Fatalf("stderr %q, want one line with %q", r.stderr, tt.want)
				}
				return
			}
			var rep backupReport
			decodeJSON(t, r.stdout, &rep, nil)
			if rep.Method != tt.method || strings.TrimSpace(r.stderr) != "" {
				t.Fatalf("method %q (want %q), stderr %q", rep.Method, tt.method, r.stderr)
			}
		})
	}
}

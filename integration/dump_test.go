package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// dumpDoc is the part of dump's JSON report the tests read.
type dumpDoc struct {
	ID       string `json:"id"`
	Reached  string `json:"reached"`
	What     string `json:"what"`
	Database string `json:"database"`
	Tables   []struct {
		Name  string `json:"name"`
		Rows  *int64 `json:"rows"`
		Bytes int64  `json:"bytes"`
	} `json:"tables"`
	Output string             `json:"output"`
	Bytes  int64              `json:"bytes"`
	Phases map[string]float64 `json:"phases"`
}

// TestDump takes tables, a database and the globals out of a backup at a
// point in time (before someone deleted rows and dropped a table), loads
// them into the live cluster with psql and pg_restore, and checks the
// refusals and the clean-up after Ctrl-C.
func TestDump(t *testing.T) {
	v := newPITRVault(t)
	c := pgtest.Start(t, pgtest.Options{Settings: v.archiveSettings()})
	c.Exec(t, "CREATE DATABASE app")
	app := c.Conn(t, "app")
	ctx := context.Background()
	mustExec := func(sql string) {
		t.Helper()
		if _, err := app.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	c.Exec(t, "CREATE TABLESPACE ts LOCATION '"+c.TablespaceDir(t)+"'")
	c.Exec(t, "CREATE TABLE shared (k int)") // in postgres, and in app below
	mustExec(`CREATE SCHEMA sales; CREATE TABLE sales.orders (id int PRIMARY KEY, note text);
		CREATE TABLE public."Mixed Case" (k text); INSERT INTO public."Mixed Case" VALUES ('x'), ('y');
		CREATE TABLE shared (k int)`)
	// The backup comes before the rows: the dump must replay WAL to see
	// them, and the table in the tablespace is created by the replay.
	b := v.backup(c)
	mustExec("INSERT INTO sales.orders SELECT g, repeat(md5(g::text), 80) FROM generate_series(1, 3000) g")
	// Rows of about 10 kB of random text: stored out of line, in TOAST;
	// its id's sequence is owned by the table.
	mustExec(`CREATE TABLE sales.archived (id serial PRIMARY KEY, payload text) TABLESPACE ts;
		INSERT INTO sales.archived (payload)
			SELECT (SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 300) i) FROM generate_series(1, 40) g`)
	const fingerprint = "SELECT count(*) || ':' || md5(string_agg(id || note, ',' ORDER BY id)) FROM sales.orders"
	const archivedPrint = "SELECT count(*) || ':' || md5(string_agg(id || payload, ',' ORDER BY id)) FROM sales.archived"
	var want, wantArchived string
	var toasted bool
	if err := app.QueryRow(ctx, fingerprint).Scan(&want); err != nil {
		t.Fatal(err)
	}
	if err := app.QueryRow(ctx, archivedPrint).Scan(&wantArchived); err != nil {
		t.Fatal(err)
	}
	if err := app.QueryRow(ctx, "SELECT pg_relation_size(reltoastrelid) > 0 FROM pg_class WHERE oid = 'sales.archived'::regclass").Scan(&toasted); err != nil || !toasted {
		t.Fatalf("sales.archived has nothing in TOAST (%v): the test would not cover it", err)
	}
	good := c.QueryString(t, "SELECT pg_current_wal_lsn()")
	// The accident.
	mustExec(`DELETE FROM sales.orders WHERE id % 2 = 0; DROP TABLE public."Mixed Case"; DROP TABLE sales.archived`)
	pitrSwitchAndWait(t, c)
	env := v.rootEnv(t)
	out := pgtest.TempDir(t)

	// loadInto makes a new database of the live cluster with schema sales
	// and returns a connection to it.
	loadInto := func(t *testing.T, db string) {
		t.Helper()
		c.Exec(t, "CREATE DATABASE "+db)
		conn := c.Conn(t, db)
		if _, err := conn.Exec(ctx, "CREATE SCHEMA sales"); err != nil {
			t.Fatal(err)
		}
	}
	queryIn := func(t *testing.T, db, sql string) string {
		t.Helper()
		var s string
		if err := c.Conn(t, db).QueryRow(ctx, sql).Scan(&s); err != nil {
			t.Fatalf("%s in %s: %v", sql, db, err)
		}
		return s
	}

	t.Run("one table as it was, found by name, loaded with psql", func(t *testing.T) {
		file := filepath.Join(out, "orders.sql")
		res := runRoot(t, env, "--output", "json", "dump", "--table", "sales.orders", "--table", "sales.archived", "--to-lsn", good, "-f", file)
		var doc dumpDoc
		if err := json.Unmarshal([]byte(res.stdout), &doc); err != nil || res.code != 0 {
			t.Fatalf("dump: exit %d, %v\n%s\n%s", res.code, err, res.stdout, res.stderr)
		}
		if doc.ID != b.ID || doc.What != "tables" || doc.Database != "app" || doc.Reached != "paused" || len(doc.Tables) != 2 ||
			doc.Tables[0].Name != "sales.orders" || doc.Tables[0].Rows == nil || *doc.Tables[0].Rows != 3000 ||
			doc.Tables[1].Rows == nil || *doc.Tables[1].Rows != 40 || doc.Tables[1].Bytes < 100000 || doc.Output != file || doc.Bytes == 0 {
			t.Fatalf("dump report: %s", res.stdout)
		}
		t.Logf("dump of one table: phases %v", doc.Phases)
		loadInto(t, "back1")
		psql := exec.Command(filepath.Join(pgtest.BinDir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", c.ConnString("back1"), "-f", file)
		if o, err := psql.CombinedOutput(); err != nil {
			t.Fatalf("psql -f %s: %v: %s", file, err, o)
		}
		if got := queryIn(t, "back1", fingerprint); got != want {
			t.Fatalf("restored table: %s, want %s", got, want)
		}
		if got := queryIn(t, "back1", archivedPrint); got != wantArchived {
			t.Fatalf("restored TOASTed table: %s, want %s", got, wantArchived)
		}
		// PostgreSQL logs a sequence 32 values ahead: recovered, it goes on
		// from at most there, never from a value already used.
		if got := queryIn(t, "back1", "SELECT (nextval('sales.archived_id_seq') BETWEEN 41 AND 73)::text || ' ' || (SELECT spcname FROM pg_tablespace t JOIN pg_class c ON c.reltablespace = t.oid WHERE c.oid = 'sales.archived'::regclass)"); got != "true ts" {
			t.Fatalf("restored sequence (its next value in 41-73?) and tablespace: %q, want \"true ts\"", got)
		}
	})

	t.Run("custom format piped into pg_restore", func(t *testing.T) {
		loadInto(t, "back2")
		dump := exec.Command(pgvaultBin, "dump", "--db", "app", "--table", `"Mixed Case"`, "--table", "sales.orders", "--to-lsn", good, "--format", "custom")
		dump.Env = append(filteredEnv(), env...)
		var report bytes.Buffer
		dump.Stderr = &report
		pipe, err := dump.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		restore := exec.Command(filepath.Join(pgtest.BinDir, "pg_restore"), "--exit-on-error", "-d", c.ConnString("back2"))
		restore.Stdin = pipe
		var restoreOut bytes.Buffer
		restore.Stdout, restore.Stderr = &restoreOut, &restoreOut
		if err := dump.Start(); err != nil {
			t.Fatal(err)
		}
		if err := restore.Run(); err != nil {
			t.Fatalf("pg_restore: %v: %s (pgvault: %s)", err, restoreOut.String(), report.String())
		}
		if err := dump.Wait(); err != nil {
			t.Fatalf("pgvault dump: %v: %s", err, report.String())
		}
		for _, line := range []string{`public."Mixed Case": 2 rows`, "sales.orders: 3000 rows", "recovery paused"} {
			if !strings.Contains(report.String(), line) {
				t.Fatalf("the report on standard error lacks %q:\n%s", line, report.String())
			}
		}
		if got := queryIn(t, "back2", fingerprint); got != want {
			t.Fatalf("restored table: %s, want %s", got, want)
		}
		if got := queryIn(t, "back2", `SELECT string_agg(k, ',' ORDER BY k) FROM public."Mixed Case"`); got != "x,y" {
			t.Fatalf(`restored "Mixed Case": %s`, got)
		}
	})

	t.Run("the end of the WAL: after the accident", func(t *testing.T) {
		file := filepath.Join(out, "now.sql")
		res := runRoot(t, env, "--output", "json", "dump", "--table", "sales.orders", "-f", file)
		var doc dumpDoc
		if err := json.Unmarshal([]byte(res.stdout), &doc); err != nil || res.code != 0 {
			t.Fatalf("dump: exit %d, %v\n%s\n%s", res.code, err, res.stdout, res.stderr)
		}
		if doc.Reached != "promoted" || *doc.Tables[0].Rows != 1500 {
			t.Fatalf("dump at the end of the WAL: %s", res.stdout)
		}
		// The dropped table is not there any more: one line, with what is.
		gone := runRoot(t, env, "dump", "--db", "app", "--table", `"Mixed Case"`, "-f", filepath.Join(out, "gone.sql"))
		if gone.code != 1 || strings.Count(strings.TrimSpace(gone.stderr), "\n") != 0 ||
			!strings.Contains(gone.stderr, `no such table: public."Mixed Case" in database "app"; nearest in schema public: public.shared`) {
			t.Fatalf("dump of a dropped table: exit %d: %s", gone.code, gone.stderr)
		}
		if _, err := os.Stat(filepath.Join(out, "gone.sql")); err == nil {
			t.Fatal("a failed dump left its file behind")
		}
	})

	t.Run("a misspelt table names what is nearby", func(t *testing.T) {
		res := runRoot(t, env, "dump", "--table", "sales.ordrs", "--to-lsn", good)
		if res.code != 1 || res.stdout != "" || !strings.Contains(res.stderr, "nearest in schema sales: sales.orders") ||
			!strings.Contains(res.stderr, "searched databases app, postgres") {
			t.Fatalf("dump of a misspelt table: exit %d: %s", res.code, res.stderr)
		}
		res = runRoot(t, env, "dump", "--db", "app", "--table", "nosuch.orders", "--to-lsn", good)
		if res.code != 1 || !strings.Contains(res.stderr, "there is no schema nosuch; its schemas are public, sales") {
			t.Fatalf("dump from a missing schema: exit %d: %s", res.code, res.stderr)
		}
		res = runRoot(t, env, "dump", "--table", "shared", "--to-lsn", good)
		if res.code != 1 || !strings.Contains(res.stderr, "public.shared are in databases app, postgres: say which with --db") {
			t.Fatalf("dump of a table in two databases without --db: exit %d: %s", res.code, res.stderr)
		}
		res = runRoot(t, env, "dump", "--db", "shop", "--to-lsn", good)
		if res.code != 1 || !strings.Contains(res.stderr, `no database "shop"`) || !strings.Contains(res.stderr, "its databases are app, postgres") {
			t.Fatalf("dump of a missing database: exit %d: %s", res.code, res.stderr)
		}
	})

	t.Run("a whole database and the globals", func(t *testing.T) {
		file := filepath.Join(out, "app.dir")
		res := runRoot(t, env, "dump", "--db", "app", "--to-lsn", good, "--format", "directory", "-f", file)
		if res.code != 0 || !strings.Contains(res.stdout, "dumped database app from backup") {
			t.Fatalf("dump --db: exit %d: %s%s", res.code, res.stdout, res.stderr)
		}
		list, err := exec.Command(filepath.Join(pgtest.BinDir, "pg_restore"), "--list", file).CombinedOutput()
		if err != nil || !strings.Contains(string(list), "TABLE DATA sales orders") || !strings.Contains(string(list), "TABLE DATA public Mixed Case") {
			t.Fatalf("pg_restore --list of the directory dump: %v\n%s", err, list)
		}
		res = runRoot(t, env, "dump", "--globals", "--to-lsn", good)
		if res.code != 0 || !strings.Contains(res.stdout, "CREATE ROLE postgres;") || !strings.Contains(res.stderr, "dumped the globals") {
			t.Fatalf("dump --globals: exit %d: %s\n%s", res.code, res.stdout, res.stderr)
		}
	})

	t.Run("usage errors", func(t *testing.T) {
		for _, args := range [][]string{
			{"dump"},
			{"dump", "--globals", "--table", "t"},
			{"dump", "--db", "app", "--format", "directory"},
			{"dump", "--db", "app", "--format", "tar"},
			{"dump", "--table", "db.s.t"},
			{"dump", "--db", "app", "--schema-only", "--data-only"},
		} {
			if res := runRoot(t, env, args...); res.code != 2 {
				t.Errorf("pgvault %v: exit %d, want 2: %s", args, res.code, res.stderr)
			}
		}
	})

	t.Run("Ctrl-C stops and removes everything", func(t *testing.T) {
		file := filepath.Join(out, "interrupted.sql")
		cmd := exec.Command(pgvaultBin, "dump", "--db", "app", "--to-lsn", good, "-f", file)
		cmd.Env = append(filteredEnv(), env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Interrupted once PostgreSQL runs on the mount.
		var base string
		waitFor(t, 2*time.Minute, "PostgreSQL to run on the dump's mount", func() (bool, error) {
			entries, _ := os.ReadDir("/proc")
			for _, e := range entries {
				comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
				cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
				if _, after, ok := strings.Cut(string(cmdline), os.TempDir()+"/pgvault-verify-"); err == nil && ok && strings.TrimSpace(string(comm)) == "postgres" {
					base = filepath.Join(os.TempDir(), "pgvault-verify-"+strings.SplitN(after, "/", 2)[0])
					return true, nil
				}
			}
			return false, nil
		})
		t.Logf("interrupting the dump running in %s", base)
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 || !strings.Contains(stderr.String(), "interrupted") {
			t.Fatalf("interrupted dump: %v: %s", err, stderr.String())
		}
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			if cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && strings.Contains(string(cmdline), base) {
				t.Errorf("still running after the interrupted dump: %s", bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
			}
		}
		if _, err := os.Stat(base); err == nil {
			t.Errorf("the interrupted dump left %s behind", base)
		}
		if _, err := os.Stat(file); err == nil {
			t.Error("the interrupted dump left its file behind")
		}
	})
}

// TestDumpWhileStreaming runs two dumps side by side, at two points in
// time, while `wal stream` keeps writing into the repository and pgbench
// runs, then dumps from a synthetic backup.
func TestDumpWhileStreaming(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 1)
	c.CreateMarkers(t)
	v := newPostgresVault(t)
	s := v.startStreamer("--pg", c.ReplicationConnString())
	waitSlotActive(t, c, "pgvault")
	b := v.backup(c)
	first := c.InsertMarker(t, "first")
	var last pgtest.Marker
	for i := range 10 {
		last = c.InsertMarker(t, fmt.Sprintf("marker %d", i))
	}
	waitStored(t, c, "pgvault")

	ctx, stopLoad := context.WithCancel(context.Background())
	wait := c.PgbenchBackground(ctx, t, "-c", "2")
	defer func() {
		stopLoad()
		wait()
	}()
	dir := pgtest.TempDir(t)
	targets := []struct {
		lsn  string
		rows int64
	}{{first.LSN, 1}, {last.LSN, 11}}
	results := make([]result, len(targets))
	var wg sync.WaitGroup
	for i, tg := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = v.run("--output", "json", "dump", "--table", pgtest.MarkerTable, "--to-lsn", tg.lsn, "-f", filepath.Join(dir, fmt.Sprintf("m%d.sql", i)))
		}()
	}
	wg.Wait()
	for i, res := range results {
		var doc dumpDoc
		if err := json.Unmarshal([]byte(res.stdout), &doc); err != nil || res.code != 0 {
			t.Fatalf("dump %d side by side: exit %d, %v\n%s", i, res.code, err, res.stderr)
		}
		if doc.ID != b.ID || len(doc.Tables) != 1 || *doc.Tables[0].Rows != targets[i].rows {
			t.Fatalf("dump %d at %s: %s, want %d markers", i, targets[i].lsn, res.stdout, targets[i].rows)
		}
	}

	// A synthetic backup made from the streamed WAL serves a dump, with no
	// WAL replayed past its consistency point.
	var syn struct {
		ID string `json:"id"`
	}
	v.json(&syn, "backup", "--synthetic", "--from", b.ID, "--to-lsn", last.LSN)
	res := v.run("--output", "json", "dump", "--backup", syn.ID, "--to-immediate", "--table", pgtest.MarkerTable, "-f", filepath.Join(dir, "syn.sql"))
	var doc dumpDoc
	if err := json.Unmarshal([]byte(res.stdout), &doc); err != nil || res.code != 0 {
		t.Fatalf("dump of a synthetic backup: exit %d, %v\n%s", res.code, err, res.stderr)
	}
	if doc.ID != syn.ID || *doc.Tables[0].Rows != 11 {
		t.Fatalf("dump of synthetic backup %s: %s, want 11 markers", syn.ID, res.stdout)
	}
	s.stop()
}

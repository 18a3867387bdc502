package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// TestBrowseTablesByName: the browse mount's tables/<backup>/<db>/
// <schema>.<table>/ holds each table's files (main fork, FSM, VM, TOAST,
// indexes) as they are in that backup, under names that survive a VACUUM
// FULL, for a regular and for a synthetic backup.
func TestBrowseTablesByName(t *testing.T) {
	v := newPITRVault(t)
	c := pgtest.Start(t, pgtest.Options{Settings: v.archiveSettings()})
	ts := c.TablespaceDir(t)
	c.Exec(t, "CREATE TABLESPACE ts LOCATION '"+ts+"'")
	c.Exec(t, "CREATE DATABASE app")
	app := c.Conn(t, "app")
	ctx := context.Background()
	exec1 := func(sql string) {
		t.Helper()
		if _, err := app.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	queryApp := func(sql string) string {
		t.Helper()
		var s string
		if err := app.QueryRow(ctx, sql).Scan(&s); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return s
	}
	exec1(`CREATE SCHEMA sales;
		CREATE TABLE sales.orders (id int PRIMARY KEY, note text);
		INSERT INTO sales.orders SELECT g, (SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 100) i) FROM generate_series(1, 300) g;
		DELETE FROM sales.orders WHERE id % 3 = 0;
		CREATE TABLE public.spaced TABLESPACE ts AS SELECT g FROM generate_series(1, 5000) g`)
	exec1("VACUUM sales.orders") // its free space map and visibility map
	size1 := queryApp("SELECT pg_total_relation_size('sales.orders')::text")
	path1 := queryApp("SELECT pg_relation_filepath('sales.orders')")
	b1 := v.backup(c)
	// A new relfilenode for the table and its index and TOAST.
	exec1("VACUUM FULL sales.orders")
	exec1("VACUUM sales.orders") // the new relfilenodes' free space and visibility maps
	path2 := queryApp("SELECT pg_relation_filepath('sales.orders')")
	if path2 == path1 {
		t.Fatal("VACUUM FULL kept the relfilenode: the test would not cover a rename")
	}
	b2 := v.backup(c)
	exec1("CREATE TABLE public.after_b2 AS SELECT 1 AS one")
	target := c.QueryString(t, "SELECT pg_current_wal_lsn()")
	pitrSwitchAndWait(t, c)
	env := v.rootEnv(t)
	syn := runRoot(t, env, "--output", "json", "backup", "--synthetic", "--from", b2.ID, "--to-lsn", target)
	if syn.code != 0 {
		t.Fatalf("synthetic backup: exit %d: %s", syn.code, syn.stderr)
	}
	b3 := strings.SplitN(strings.SplitN(syn.stdout, `"id": "`, 2)[1], `"`, 2)[0]

	mnt := pgtest.TempDir(t)
	startMount(t, env, mnt)
	tables := filepath.Join(mnt, "tables")
	orders := func(id string) string { return filepath.Join(tables, id[:8], "app", "sales.orders") }
	ls := func(dir string) []string {
		t.Helper()
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}

	t.Run("a table's files by name", func(t *testing.T) {
		got := ls(orders(b1.ID))
		for _, want := range []string{"main", "fsm", "vm", "index_orders_pkey", "toast", "toast_index"} {
			if !slices.Contains(got, want) {
				t.Fatalf("tables/%s/app/sales.orders lists %v: no %s", b1.ID[:8], got, want)
			}
		}
		var total int64
		for _, n := range got {
			fi, err := os.Stat(filepath.Join(orders(b1.ID), n))
			if err != nil {
				t.Fatal(err)
			}
			total += fi.Size()
		}
		if fmt.Sprint(total) != size1 {
			t.Fatalf("the files of sales.orders hold %d bytes, pg_total_relation_size said %s", total, size1)
		}
		for id, p := range map[string]string{b1.ID: path1, b2.ID: path2} {
			main, err := os.ReadFile(filepath.Join(orders(id), "main"))
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join(mnt, "snapshots", id[:8], p))
			if err != nil || !bytes.Equal(main, want) {
				t.Fatalf("tables/%s/app/sales.orders/main is not snapshots/%s/%s (%v)", id[:8], id[:8], p, err)
			}
		}
		if got := ls(filepath.Join(tables, b1.ID[:8], "app", "public.spaced")); !slices.Contains(got, "main") {
			t.Fatalf("a table in a tablespace lists %v", got)
		}
		if got := ls(filepath.Join(tables, b1.ID[:8])); !slices.Equal(got, []string{"app", "postgres", "template1"}) {
			t.Fatalf("tables/%s lists %v", b1.ID[:8], got)
		}
	})

	t.Run("diff between two backups across a VACUUM FULL", func(t *testing.T) {
		out, err := exec.Command("diff", "-rq", orders(b1.ID), orders(b2.ID)).CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
			t.Fatalf("diff -rq: %v\n%s", err, out)
		}
		if strings.Contains(string(out), "Only in") || !strings.Contains(string(out), "main differ") {
			t.Fatalf("diff -rq between the two backups' sales.orders should compare file by file:\n%s", out)
		}
	})

	t.Run("a synthetic backup's tables", func(t *testing.T) {
		if got := ls(filepath.Join(tables, b3[:8], "app")); !slices.Contains(got, "public.after_b2") || !slices.Contains(got, "sales.orders") {
			t.Fatalf("tables/%s/app lists %v", b3[:8], got)
		}
	})
}

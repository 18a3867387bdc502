package integration

import (
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// TestRestoreIncludeDatabase restores one database of a cluster (backups
// read locally and streamed with BASE_BACKUP): the other database's
// relation files are sparse and empty, recovery replays WAL that touched
// them, the included database serves its rows, and the left-out one is
// dropped.
func TestRestoreIncludeDatabase(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	ts := c.TablespaceDir(t)
	c.Exec(t, "CREATE TABLESPACE ts LOCATION '"+ts+"'")
	c.Exec(t, "CREATE DATABASE keep")
	c.Exec(t, "CREATE DATABASE skip")
	for _, db := range []string{"keep", "skip"} {
		conn := c.Conn(t, db)
		if _, err := conn.Exec(t.Context(), `CREATE TABLE rows AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g;
			CREATE TABLE spaced TABLESPACE ts AS SELECT g FROM generate_series(1, 5000) g`); err != nil {
			t.Fatal(err)
		}
	}
	skipOID := c.QueryString(t, "SELECT oid FROM pg_database WHERE datname = 'skip'")
	var skipRel string
	if err := c.Conn(t, "skip").QueryRow(t.Context(), "SELECT pg_relation_filepath('rows')").Scan(&skipRel); err != nil {
		t.Fatal(err)
	}

	v := newPostgresVault(t)
	s := v.startStreamer("--pg", c.ReplicationConnString())
	waitSlotActive(t, c, "pgvault")
	for _, method := range []string{"local", "stream"} {
		t.Run(method, func(t *testing.T) {
			b := v.backup(c, "--method", method)
			// WAL after the backup touches both databases' pages: recovery
			// replays it onto the left-out database's empty files too.
			for _, db := range []string{"keep", "skip"} {
				if _, err := c.Conn(t, db).Exec(t.Context(), "UPDATE rows SET h = 'after' WHERE g % 10 = 0; INSERT INTO rows SELECT g, 'new' FROM generate_series(20001, 21000) g"); err != nil {
					t.Fatal(err)
				}
			}
			c.Exec(t, "SELECT pg_switch_wal()")
			waitStored(t, c, "pgvault")
			var wantRows, wantUpdated int64
			if err := c.Conn(t, "keep").QueryRow(t.Context(), "SELECT count(*), count(*) FILTER (WHERE h = 'after') FROM rows").Scan(&wantRows, &wantUpdated); err != nil {
				t.Fatal(err)
			}

			target := filepath.Join(pgtest.TempDir(t), "data")
			newTS := filepath.Join(pgtest.TempDir(t), "ts")
			var rep struct {
				Excluded []string `json:"excluded_databases"`
			}
			postgresOwns(t, v.base) // the restored server's restore_command reads the repository
			v.json(&rep, "restore", b.ID, "--target", target, "--db-include", "keep", "--tablespace-map", ts+"="+newTS)
			if !slices.Equal(rep.Excluded, []string{"skip"}) {
				t.Fatalf("excluded databases: %v", rep.Excluded)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(target, skipRel), &st); err != nil || st.Size == 0 || st.Blocks != 0 {
				t.Fatalf("%s of the left-out database: %v, size %d, %d blocks: want a sparse file of its size", skipRel, err, st.Size, st.Blocks)
			}
			if err := syscall.Stat(filepath.Join(target, "base", skipOID, "PG_VERSION"), &st); err != nil || st.Size == 0 {
				t.Fatalf("PG_VERSION of the left-out database: %v, %d bytes", err, st.Size)
			}

			r := pgtest.StartOn(t, target, pgtest.Options{})
			waitFor(t, 2*time.Minute, "the restored cluster to promote", func() (bool, error) {
				return r.QueryString(t, "SELECT pg_is_in_recovery()::text") == "false", nil
			})
			var n, updated int64
			if err := r.Conn(t, "keep").QueryRow(t.Context(), "SELECT count(*), count(*) FILTER (WHERE h = 'after') FROM rows").Scan(&n, &updated); err != nil || n != wantRows || updated != wantUpdated {
				t.Fatalf("the included database: %d rows, %d updated, %v; want %d and %d", n, updated, err, wantRows, wantUpdated)
			}
			if err := r.Conn(t, "keep").QueryRow(t.Context(), "SELECT count(*) FROM spaced").Scan(&n); err != nil || n != 5000 {
				t.Fatalf("the included database's table in a tablespace: %d rows, %v", n, err)
			}
			r.Exec(t, "DROP DATABASE skip")
			if got := r.QueryString(t, "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database"); got != "keep,postgres,template0,template1" {
				t.Fatalf("databases after dropping the left-out one: %s", got)
			}
			r.Stop(t, "fast")
		})
	}

	t.Run("refusals", func(t *testing.T) {
		moved := "--tablespace-map=" + ts + "=" + filepath.Join(pgtest.TempDir(t), "ts")
		res := v.run("restore", "latest", "--target", filepath.Join(pgtest.TempDir(t), "data"), moved, "--db-include", "nosuch")
		if res.code != 1 || !strings.Contains(res.stderr, `no such database in the backup: "nosuch"; the backup's databases are keep, postgres, skip, template0, template1`) {
			t.Fatalf("--db-include of a missing database: exit %d: %s", res.code, res.stderr)
		}
		res = v.run("restore", "latest", "--target", filepath.Join(pgtest.TempDir(t), "data"), moved, "--db-include", "keep", "--delta")
		if res.code != 2 {
			t.Fatalf("--db-include with --delta: exit %d: %s", res.code, res.stderr)
		}
	})
	s.stop()
}

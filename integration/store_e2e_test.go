package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/minio"
	"github.com/pgvault/pgvault/integration/pgtest"
)

// storeEndToEnd runs the main job against the repository at url (a store's
// URL; env holds its credentials): WAL streamed into it, a base backup, a
// point-in-time restore whose restore_command fetches from it, an instant
// mount PostgreSQL starts on, writes to and hydrates, the browse mount
// against a restore, verify --boot, and prune. Each store's test
// calls it with a real server of that store's API.
func storeEndToEnd(t *testing.T, url string, env []string) {
	t.Helper()
	// The restored servers' restore_command inherits the credentials
	// from their environment, as a server started by systemd with an
	// EnvironmentFile would.
	setStoreEnv(t, env)
	base := pgtest.TempDir(t)
	pw := filepath.Join(base, "password")
	if err := os.WriteFile(pw, []byte("store secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v := &vault{t: t, repo: url, base: base, pwFile: pw, env: append([]string{
		"PGVAULT_REPO=" + url, "PGVAULT_PASSWORD_FILE=" + pw, "PGVAULT_CACHE_DIR=" + filepath.Join(base, "cache"),
	}, env...)}
	v.must("repo", "init")

	c := pgtest.Start(t, pgtest.Options{})
	c.CreateMarkers(t)
	c.PgbenchInit(t, 1)
	s := v.startStreamer("--pg", c.ReplicationConnString())
	waitSlotActive(t, c, "pgvault")
	b := v.backup(c)
	c.InsertMarker(t, "before the target")
	target := c.CurrentLSN(t)
	wantAtTarget := c.CountMarkers(t)
	c.InsertMarker(t, "after the target")
	c.SwitchWAL(t)
	waitStored(t, c, "pgvault")

	t.Run("point-in-time restore", func(t *testing.T) {
		dir := v.restore(b.ID, "--to-lsn", target, "--target-action", "promote")
		r := pgtest.StartOn(t, dir, pgtest.Options{})
		waitFor(t, 2*time.Minute, "the restored cluster to promote", func() (bool, error) {
			return r.QueryString(t, "SELECT pg_is_in_recovery()::text") == "false", nil
		})
		if got := r.CountMarkers(t); got != wantAtTarget {
			t.Fatalf("restored to %s: %d markers, want %d", target, got, wantAtTarget)
		}
		r.Stop(t, "fast")
	})

	t.Run("instant mount", func(t *testing.T) {
		m, mnt := instantDir(t, v.env, t.TempDir(), "--backup", b.ID, "--to-lsn", target, "--target-action", "promote", "--hydrate")
		r := pgtest.StartOn(t, mnt, pgtest.Options{})
		waitFor(t, 2*time.Minute, "PostgreSQL on the mount to promote", func() (bool, error) {
			return r.QueryString(t, "SELECT pg_is_in_recovery()::text") == "false", nil
		})
		if got := r.CountMarkers(t); got != wantAtTarget {
			t.Fatalf("on the instant mount: %d markers, want %d", got, wantAtTarget)
		}
		// Writes go to the scratch overlay, while --hydrate copies the
		// rest of the backup from the store into it.
		r.Exec(t, "CREATE TABLE written_on_mount AS SELECT g FROM generate_series(1, 20000) g")
		r.Exec(t, "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 10 = 0")
		waitFor(t, 2*time.Minute, "hydration to finish", func() (bool, error) {
			out := m.output()
			return strings.Contains(out, "hydration done"), fmt.Errorf("mount output:\n%s", out)
		})
		if n := r.QueryInt(t, "SELECT count(*) FROM written_on_mount"); n != 20000 {
			t.Fatalf("written_on_mount has %d rows", n)
		}
		if n := r.QueryInt(t, "SELECT count(*) FROM pgbench_accounts WHERE abalance = 1"); n != 10000 {
			t.Fatalf("%d updated accounts, want 10000", n)
		}
		r.Stop(t, "fast")
		m.stop()
	})

	t.Run("browse mount", func(t *testing.T) {
		mnt := pgtest.TempDir(t)
		m := startMount(t, v.env, mnt)
		snap := filepath.Join(mnt, "snapshots", b.ID[:8])
		restored := v.restore(b.ID, "--no-recovery-config")
		want, got := listTree(t, restored), listTree(t, snap)
		delete(want, "backup_manifest") // a restore writes its own
		delete(got, "backup_manifest")
		for p, w := range want {
			if g, ok := got[p]; !ok || g != w {
				t.Fatalf("%s: the browse mount shows %+v, restore wrote %+v", p, g, w)
			}
		}
		for _, p := range []string{"PG_VERSION", "global/pg_control", "postgresql.conf"} {
			a, err1 := os.ReadFile(filepath.Join(restored, p))
			b, err2 := os.ReadFile(filepath.Join(snap, p))
			if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
				t.Fatalf("%s differs between the browse mount and a restore (%v, %v)", p, err1, err2)
			}
		}
		m.stop()
	})

	t.Run("verify --boot", func(t *testing.T) {
		doc, _ := verifyJSON(t, v.env, 0, b.ID, "--boot")
		if doc.Boot == nil {
			t.Fatalf("verify --boot: no boot report")
		}
	})

	t.Run("prune", func(t *testing.T) {
		b2 := v.backup(c)
		v.must("prune", "--keep-last", "1", "--apply")
		var list []struct {
			ID string `json:"id"`
		}
		v.json(&list, "list")
		if len(list) != 1 || list[0].ID != b2.ID {
			t.Fatalf("after prune --keep-last 1: %+v, want only %s", list, b2.ID)
		}
		v.must("repo", "check")
	})
	s.stop()
}

// TestStoreEndToEndS3 is the main job against MinIO.
func TestStoreEndToEndS3(t *testing.T) {
	srv := minio.Start(t)
	storeEndToEnd(t, srv.URL("e2e"), srv.Env())
}

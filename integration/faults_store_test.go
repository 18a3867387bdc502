package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/azurite"
	"github.com/pgvault/pgvault/integration/pgtest"
)

// The fault tests that a store's real server takes part in, shared by
// every store: each store's test starts its server and calls these.

// TestFaultAzuriteRestartMidBackup: Azurite restarted (SIGTERM, which
// keeps its data) while a backup streams into it.
func TestFaultAzuriteRestartMidBackup(t *testing.T) {
	srv := azurite.Start(t)
	storeRestartMidBackup(t, "Azurite", srv.URL("repo"), srv.Env(), srv.Restart)
}

// storeRestartMidBackup restarts a store's server (restart) while a backup
// streams into the repository at url (env: the store's credentials): the
// backup either succeeds through retries or fails in one line, and the
// repository passes repo check either way; a retried backup succeeds and
// restores byte-exact.
func storeRestartMidBackup(t *testing.T, server, url string, env []string, restart func()) {
	t.Helper()
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 2)
	pw := filepath.Join(t.TempDir(), "password")
	os.WriteFile(pw, []byte("integration secret\n"), 0o600)
	v := &vault{t: t, repo: url, env: append([]string{
		"PGVAULT_REPO=" + url, "PGVAULT_PASSWORD_FILE=" + pw, "PGVAULT_CACHE_DIR=" + t.TempDir(),
	}, env...)}
	v.must("repo", "init")
	// The moments of the restart, as how far the server has streamed the
	// backup (8 MB/s: 16 MiB is 2 s in), not as time: on a loaded machine
	// a fixed delay may fall before the backup has even started.
	moments := []int64{16 << 20}
	if envInt(t, "FAULT_ROUNDS", 3) > 3 { // make torture: more moments
		moments = []int64{4 << 20, 12 << 20, 24 << 20, 36 << 20}
	}
	for round, moment := range moments {
		p := v.start("--pg", c.ReplicationConnString(), "backup", "--fast-checkpoint", "--max-rate", "8192")
		waitFor(t, time.Minute, fmt.Sprintf("the backup to stream %d MiB", moment>>20), func() (bool, error) {
			select {
			case <-p.done:
				t.Fatalf("round %d: the backup ended before the restart: %v\n%s", round, p.err, p.out)
			default:
			}
			n := c.QueryInt(t, "SELECT coalesce((SELECT backup_streamed FROM pg_stat_progress_basebackup), 0)")
			return n >= moment, fmt.Errorf("%d bytes streamed", n)
		})
		restart()
		<-p.done
		out := p.out.String()
		if p.err != nil {
			// A clean failure: one line.
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "pgvault: ") {
				t.Fatalf("round %d: backup failed across the %s restart, not in one line: %v\n%s", round, server, p.err, out)
			}
			t.Logf("round %d: backup across the %s restart failed cleanly: %s", round, server, lines[0])
		} else {
			t.Logf("round %d: backup across the %s restart succeeded through retries", round, server)
		}
		if r := v.run("repo", "check"); r.code != 0 {
			t.Fatalf("round %d: repo check after the %s restart: exit %d\n%s%s", round, server, r.code, r.stdout, r.stderr)
		}
		v.backup(c) // a retry succeeds
	}
	if r := v.run("repo", "check", "--read-data"); r.code != 0 {
		t.Fatalf("repo check --read-data: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	dir := v.restore("latest", "--no-recovery-config")
	verifyBackup(t, dir)
}

package integration

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/azurite"
	"github.com/pgvault/pgvault/integration/pgtest"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/all"
)

// The fault tests that a store's real server takes part in, shared by
// every store: each store's test starts its server and calls these.

// TestFaultAzuriteRestartMidBackup: Azurite restarted (SIGTERM, which
// keeps its data) while a backup streams into it.
func TestFaultAzuriteRestartMidBackup(t *testing.T) {
	srv := azurite.Start(t)
	storeRestartMidBackup(t, "Azurite", srv.URL("repo"), srv.Env(), srv.Restart)
}

// TestFaultCampaignAzure is the fault campaign on Azurite: faults injected
// between pgvault and the Azure backend, whose own errors go through the
// same retry wrapper.
func TestFaultCampaignAzure(t *testing.T) {
	srv := azurite.Start(t)
	faultCampaign(t, srv.URL("campaign"), srv.Env())
}

// campaignVault is the fault campaign's repository: a local folder when
// url is "", else the store at url, whose credentials (env) are also set
// for the test so that a restored server's restore_command inherits them.
func campaignVault(t *testing.T, url string, env []string) *vault {
	t.Helper()
	if url == "" {
		return newPostgresVault(t)
	}
	for _, kv := range env {
		k, val, _ := strings.Cut(kv, "=")
		t.Setenv(k, val)
	}
	base := pgtest.TempDir(t)
	pw := filepath.Join(base, "password")
	if err := os.WriteFile(pw, []byte("integration secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v := &vault{t: t, repo: url, base: base, pwFile: pw, env: append([]string{
		"PGVAULT_REPO=" + url, "PGVAULT_PASSWORD_FILE=" + pw, "PGVAULT_CACHE_DIR=" + filepath.Join(base, "cache-root"),
	}, env...)}
	v.must("repo", "init")
	return v
}

// firstSegment is the name of the oldest complete WAL segment stored, in
// a local repository or (with the store's credentials in the process's
// environment) in a store.
func firstSegment(t *testing.T, v *vault) string {
	t.Helper()
	var names []string
	if loc, err := all.ParseURL(v.repo); err == nil && loc.Scheme == all.SchemeFile {
		filepath.WalkDir(loc.Path+"/wal", func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && len(d.Name()) == 24 {
				names = append(names, d.Name())
			}
			return nil
		})
	} else {
		b, err := all.Open(t.Context(), v.repo, all.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		err = b.List(t.Context(), backend.WALFile, func(fi backend.FileInfo) error {
			if name := path.Base(fi.Name); len(name) == 24 {
				names = append(names, name)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(names) == 0 {
		t.Fatal("no WAL segment in the repository")
	}
	slices.Sort(names)
	return names[0]
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

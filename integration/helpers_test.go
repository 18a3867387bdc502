package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// pgvaultBin is the binary under test, built once by TestMain.
var pgvaultBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pgvault-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pgvaultBin = filepath.Join(dir, "pgvault")
	// The test build: the release binary plus the fault injection the
	// campaigns turn on with PGVAULT_TEST_FAULTS (cmd/pgvault/faults_test_build.go).
	build := exec.Command("go", "build", "-tags", "pgvault_testfaults,disable_grpc_modules,urfave_cli_no_docs", "-o", pgvaultBin, "../cmd/pgvault")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build pgvault:", err)
		os.Exit(1)
	}
	// The binary must be executable by postgres (restore_command runs it).
	os.Chmod(dir, 0o755)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// vault drives the pgvault binary against one repository.
type vault struct {
	t      *testing.T
	repo   string
	env    []string
	base   string // folder holding the repository, password file and caches, when known
	pwFile string
}

// newVault creates an encrypted repository in a temp folder (or at url).
func newVault(t *testing.T, url string) *vault {
	t.Helper()
	if url == "" {
		url = filepath.Join(t.TempDir(), "repo")
	}
	pw := filepath.Join(t.TempDir(), "password")
	os.WriteFile(pw, []byte("integration secret\n"), 0o600)
	cache := t.TempDir()
	// Before the cache's removal (cleanups run last first).
	t.Cleanup(func() {
		if err := pgtest.WaitPrefetchers(cache, 20*time.Second); err != nil {
			t.Error(err)
		}
	})
	v := &vault{t: t, repo: url, env: []string{
		"PGVAULT_REPO=" + url,
		"PGVAULT_PASSWORD_FILE=" + pw,
		"PGVAULT_CACHE_DIR=" + cache,
	}}
	v.must("repo", "init")
	return v
}

type result struct {
	code           int
	stdout, stderr string
}

// run executes pgvault with args and returns its exit code and output.
func (v *vault) run(args ...string) result {
	v.t.Helper()
	return v.runCtx(context.Background(), args...)
}

func (v *vault) runCtx(ctx context.Context, args ...string) result {
	v.t.Helper()
	cmd := exec.CommandContext(ctx, pgvaultBin, args...)
	cmd.Env = append(filteredEnv(), v.env...)
	return runCmd(v.t, cmd, args)
}

// runCmd runs a prepared pgvault command and returns its exit code and
// output; failing to run it at all fails the test.
func runCmd(t testing.TB, cmd *exec.Cmd, args []string) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run pgvault %v: %v", args, err)
	}
	return result{code, out.String(), errb.String()}
}

// succeeded fails the test unless r is a success, and returns its stdout.
func succeeded(t testing.TB, r result, args []string) string {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("pgvault %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// decodeJSON decodes a command's --output json document.
func decodeJSON(t testing.TB, out string, into any, args []string) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), into); err != nil {
		t.Fatalf("pgvault %v: bad JSON: %v\n%s", args, err, out)
	}
}

// filteredEnv drops PGVAULT_* and PG* variables of the caller, so tests
// see only what they set.
func filteredEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PGVAULT_") || strings.HasPrefix(kv, "PG") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// must runs pgvault and fails the test unless it exits 0.
func (v *vault) must(args ...string) string {
	v.t.Helper()
	return succeeded(v.t, v.run(args...), args)
}

// json runs pgvault with --output json and decodes the document into v.
func (v *vault) json(into any, args ...string) {
	v.t.Helper()
	decodeJSON(v.t, v.must(append([]string{"--output", "json"}, args...)...), into, args)
}

type backupReport struct {
	ID               string   `json:"id"`
	StartLSN         string   `json:"start_lsn"`
	StopLSN          string   `json:"stop_lsn"`
	BytesRead        int64    `json:"bytes_read"`
	StoredBytes      int64    `json:"stored_bytes"`
	Warnings         []string `json:"warnings"`
	ChecksumFailures bool     `json:"checksum_failures"`
	Method           string   `json:"method"`
}

// backup takes a base backup of c and returns the JSON report.
func (v *vault) backup(c *pgtest.Cluster, extra ...string) backupReport {
	v.t.Helper()
	var rep backupReport
	v.json(&rep, append([]string{"--pg", c.ReplicationConnString(), "backup", "--fast-checkpoint"}, extra...)...)
	return rep
}

// restore restores a backup into a new postgres-owned folder and returns
// it. The repository and its cache are handed to postgres first: the
// restored server's restore_command runs as postgres, and a root restore
// refuses to write one that could not read them.
func (v *vault) restore(id string, extra ...string) string {
	v.t.Helper()
	v.handToPostgres()
	target := filepath.Join(pgtest.TempDir(v.t), "data")
	v.must(append([]string{"restore", id, "--target", target}, extra...)...)
	return target
}

// handToPostgres gives the postgres OS user the vault's repository (when
// it is a folder), password file and cache folder.
func (v *vault) handToPostgres() {
	v.t.Helper()
	paths := []string{v.base}
	if !strings.Contains(v.repo, "://") {
		paths = append(paths, v.repo)
	}
	for _, kv := range v.env {
		if k, val, _ := strings.Cut(kv, "="); k == "PGVAULT_PASSWORD_FILE" || k == "PGVAULT_CACHE_DIR" {
			paths = append(paths, val)
		}
	}
	postgresOwns(v.t, paths...)
}

// verifyBackup runs pg_verifybackup -n on a restored data directory.
func verifyBackup(t *testing.T, dir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := pgtest.RunAsPostgres(ctx, "pg_verifybackup", "-n", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_verifybackup -n %s: %v\n%s", dir, err, out)
	}
}

// prependHBA puts lines at the top of c's pg_hba.conf, reloads, and
// waits until they are in force. The reload is asynchronous, and the
// harness's trust line lets anyone in until it is done, so the lines
// must ask role for a password on replication connections from
// 127.0.0.1: a wrong one refused shows them in force.
func prependHBA(t *testing.T, c *pgtest.Cluster, role, lines string) {
	t.Helper()
	hba := filepath.Join(c.DataDir(), "pg_hba.conf")
	old, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hba, append([]byte(lines), old...), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Exec(t, "SELECT pg_reload_conf()")
	probe := fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=wrong replication=true", c.Port(), role)
	waitFor(t, 10*time.Second, "pg_hba.conf's lines for "+role+" to apply", func() (bool, error) {
		conn, err := pgconn.Connect(context.Background(), probe)
		if err == nil {
			conn.Close(context.Background())
			return false, errors.New(role + " connects with a wrong password")
		}
		var pgErr *pgconn.PgError
		return errors.As(err, &pgErr) && pgErr.Code == "28P01", err // invalid_password
	})
}

// pollEvery is how often waitFor looks: often enough that a wait adds
// little to a test, rarely enough that a condition which opens a
// PostgreSQL connection does not load the shared machine.
const pollEvery = 50 * time.Millisecond

// waitFor waits until cond reports done, looking at once and then every
// pollEvery, and fails the test if that takes longer than timeout. cond's
// error says why it is not done yet; the last one ends the failure
// message. A cond that sees the wait cannot succeed any more (the
// process it waits on exited) fails the test itself.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	if err := poll(timeout, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// poll is waitFor for callers that must not fail the test (cleanups that
// fall back to something else): it returns an error after timeout.
func poll(timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		done, why := cond()
		if done {
			return nil
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			if why == nil {
				return fmt.Errorf("not so after %v", timeout)
			}
			return fmt.Errorf("not so after %v: %w", timeout, why)
		}
	}
}

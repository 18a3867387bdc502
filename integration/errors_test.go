package integration

import (
	"context"
	"errors"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/minio"
	"github.com/pgvault/pgvault/integration/pgtest"
	"github.com/pgvault/pgvault/integration/sshd"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend/file"
)

// The bad-input catalogue's cases that need a server (PostgreSQL, S3,
// SFTP) or the real binary. docs/reference/errors.md lists every case with
// the test that covers it; the others live in cmd/pgvault (TestBadInput,
// TestCheckNamesDamage, TestRestoreUsageErrors, TestWALCheck) and in the
// backup, WAL archive, PITR, mount and fault tests.
//
// Each case checks the exit code, that stderr is one line saying what is
// wrong, and that nothing was written: the repository's objects are as
// they were, and a refused restore created no target.

// errCase runs one bad input and checks its outcome.
func errCase(t *testing.T, v *vault, code int, subs []string, args ...string) {
	t.Helper()
	var before map[string]string
	if v.base != "" || !strings.Contains(v.repo, "://") {
		before = repoListing(t, v.repo)
	}
	r := v.run(args...)
	line := oneLineFailure(t, strings.Join(args, " "), r, code, subs...)
	t.Logf("exit %d: %s", r.code, line)
	if before != nil && !mapsEqual(before, repoListing(t, v.repo)) {
		t.Fatalf("%v changed the repository", args)
	}
}

func TestErrors(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	tsDir := c.TablespaceDir(t)
	c.Exec(t, "CREATE TABLESPACE extra LOCATION '"+tsDir+"'")
	c.Exec(t, "CREATE TABLE in_extra TABLESPACE extra AS SELECT g FROM generate_series(1, 1000) g")
	v := newVault(t, "")
	rep := v.backup(c)

	t.Run("tablespace target not empty", func(t *testing.T) {
		target := filepath.Join(t.TempDir(), "data")
		full := t.TempDir()
		os.WriteFile(filepath.Join(full, "precious"), []byte("x"), 0o600)
		errCase(t, v, 1, []string{"not empty", full}, "restore", rep.ID, "--target", target, "--no-recovery-config", "--tablespace-map", tsDir+"="+full)
		if _, err := os.Stat(target); !errors.Is(err, fs.ErrNotExist) {
			t.Fatal("a refused restore created the target")
		}
		if b, _ := os.ReadFile(filepath.Join(full, "precious")); string(b) != "x" {
			t.Fatal("a refused restore touched the tablespace folder")
		}
	})
	t.Run("repo init inside a data directory", func(t *testing.T) {
		pw := filepath.Join(t.TempDir(), "password")
		os.WriteFile(pw, []byte("secret\n"), 0o600)
		// A copy, because the running server's checkpoints and statistics
		// would change the listing errCase compares.
		data := quietCopy(t, c.DataDir())
		in := &vault{t: t, repo: data, env: []string{"PGVAULT_REPO=" + data, "PGVAULT_PASSWORD_FILE=" + pw, "PGVAULT_CACHE_DIR=" + t.TempDir()}}
		errCase(t, in, 1, []string{"not empty", "PG_VERSION", "empty folder"}, "repo", "init")
		for _, p := range []string{"config", "keys"} {
			if _, err := os.Stat(filepath.Join(data, p)); err == nil {
				t.Fatalf("a refused init wrote %s into the data directory", p)
			}
		}
	})
	t.Run("restore without the WAL the backup needs", func(t *testing.T) {
		target := filepath.Join(t.TempDir(), "data")
		errCase(t, v, 1, []string{"is missing from the repository", "--no-recovery-config"}, "restore", rep.ID, "--target", target)
		if _, err := os.Stat(target); !errors.Is(err, fs.ErrNotExist) {
			t.Fatal("a refused restore created the target")
		}
	})
	t.Run("restore of an unknown backup", func(t *testing.T) {
		target := filepath.Join(t.TempDir(), "data")
		errCase(t, v, 1, []string{"ffffffff"}, "restore", "ffffffff", "--target", target, "--no-recovery-config")
		if _, err := os.Stat(target); !errors.Is(err, fs.ErrNotExist) {
			t.Fatal("a refused restore created the target")
		}
	})
	t.Run("restore to a target LSN with no WAL archived", func(t *testing.T) {
		target := filepath.Join(t.TempDir(), "data")
		errCase(t, v, 1, nil, "restore", "--target", target, "--to-lsn", "FFFF/0")
		if _, err := os.Stat(target); !errors.Is(err, fs.ErrNotExist) {
			t.Fatal("a refused restore created the target")
		}
	})
	t.Run("restore with the password only in the environment", func(t *testing.T) {
		target := filepath.Join(t.TempDir(), "data")
		envOnly := &vault{t: t, repo: v.repo, env: []string{"PGVAULT_REPO=" + v.repo, "PGVAULT_PASSWORD=integration secret", "PGVAULT_CACHE_DIR=" + t.TempDir()}}
		errCase(t, envOnly, 1, []string{"--password-file"}, "restore", rep.ID, "--target", target)
		if _, err := os.Stat(target); !errors.Is(err, fs.ErrNotExist) {
			t.Fatal("a refused restore created the target")
		}
	})
	t.Run("repository locked by prune", func(t *testing.T) {
		be, err := file.New(v.repo)
		if err != nil {
			t.Fatal(err)
		}
		r, err := repo.Open(context.Background(), be, []byte("integration secret"), repo.Options{CacheDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		lock, err := r.Lock(context.Background(), repo.LockExclusive, "prune")
		if err != nil {
			t.Fatal(err)
		}
		errCase(t, v, 1, []string{"locked", "prune"}, "--pg", c.ReplicationConnString(), "backup")
		errCase(t, v, 1, []string{"locked", "prune"}, "prune", "--keep-last", "1", "--apply")
		lock.Unlock(context.Background())
		v.must("repo", "check")
	})
	t.Run("unparsable conninfo", func(t *testing.T) {
		errCase(t, v, 2, []string{"--pg"}, "--pg", "host=x port=notaport password=hunter2hunter2", "backup")
		if r := v.run("--pg", "host=x port=notaport password=hunter2hunter2", "backup"); strings.Contains(r.stderr, "hunter2") {
			t.Fatalf("the password is in the message: %s", r.stderr)
		}
	})
	t.Run("unknown command", func(t *testing.T) {
		r := v.run("bogus")
		if r.code != 2 || !strings.Contains(r.stderr, `unknown command "bogus"`) {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
	})
	t.Run("wal_level minimal", func(t *testing.T) {
		m := pgtest.Start(t, pgtest.Options{Settings: map[string]string{"wal_level": "minimal", "max_wal_senders": "0"}})
		errCase(t, v, 1, []string{"max_wal_senders"}, "--pg", m.ReplicationConnString(), "backup")
		r := v.run("--pg", m.ConnString("postgres"), "wal", "preflight")
		if r.code != 3 || !strings.Contains(r.stdout, "wal_level") || !strings.Contains(r.stdout, "replica") {
			t.Fatalf("preflight on wal_level=minimal: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		oneLineFailure(t, "preflight", r, 3)
	})
	t.Run("missing /dev/fuse", func(t *testing.T) {
		// A mount namespace whose /dev has no fuse device.
		mnt := t.TempDir()
		cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
			`mount -t tmpfs tmpfs /dev && exec "$0" "$@"`, pgvaultBin, "mount", mnt)
		cmd.Env = append(filteredEnv(), v.env...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("mount without /dev/fuse: %v\n%s", err, out)
		}
		oneLineFailure(t, "mount without /dev/fuse", result{1, "", string(out)}, 1, "/dev/fuse is missing", "modprobe fuse")
	})
}

func TestErrorsStorage(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "password")
	os.WriteFile(pw, []byte("integration secret\n"), 0o600)
	vaultAt := func(u string, extra ...string) *vault {
		return &vault{t: t, repo: u, env: append([]string{"PGVAULT_REPO=" + u, "PGVAULT_PASSWORD_FILE=" + pw, "PGVAULT_CACHE_DIR=" + t.TempDir()}, extra...)}
	}
	t.Run("unreachable S3", func(t *testing.T) {
		q := url.Values{"endpoint": {"http://127.0.0.1:1"}, "region": {"us-east-1"}, "path_style": {"true"}}
		// Bounded retries (the test hook): the default would retry for
		// up to two minutes, as it should in production.
		v := vaultAt("s3://bucket/repo?"+q.Encode(), "AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=y", "PGVAULT_TEST_FAULTS=attempts=2,delay=10ms")
		start := time.Now()
		errCase(t, v, 1, []string{"127.0.0.1:1", "connection refused"}, "repo", "check")
		t.Logf("unreachable S3 reported after %v", time.Since(start).Round(time.Millisecond))
	})
	t.Run("no S3 credentials", func(t *testing.T) {
		// No AWS_* variables and no ~/.aws: the SDK's credential chain ends
		// at the instance metadata service, which is not there; the one
		// line says what to set, with no SDK log line before it.
		q := url.Values{"endpoint": {"http://127.0.0.1:1"}, "region": {"us-east-1"}, "path_style": {"true"}}
		v := vaultAt("s3://bucket/repo?"+q.Encode(), "HOME="+t.TempDir(), "AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "PGVAULT_TEST_FAULTS=attempts=1,delay=10ms")
		errCase(t, v, 1, []string{"no S3 credentials", "AWS_ACCESS_KEY_ID"}, "repo", "check")
	})
	t.Run("wrong S3 credentials", func(t *testing.T) {
		srv := minio.Start(t)
		env := srv.Env()
		good := vaultAt(srv.URL("repo"), env...)
		good.must("repo", "init")
		bad := vaultAt(srv.URL("repo"), "AWS_ACCESS_KEY_ID="+srv.AccessKey, "AWS_SECRET_ACCESS_KEY=wrong-secret-key", "AWS_REGION="+minio.Region)
		errCase(t, bad, 1, []string{"AWS_SECRET_ACCESS_KEY"}, "repo", "check")
		good.must("repo", "check")
	})
	t.Run("SFTP unknown host key", func(t *testing.T) {
		srv := sshd.Start(t)
		empty := filepath.Join(t.TempDir(), "known_hosts")
		os.WriteFile(empty, nil, 0o600)
		u, _ := url.Parse(srv.URL(filepath.Join(t.TempDir(), "repo")))
		q := u.Query()
		q.Set("known_hosts", empty)
		u.RawQuery = q.Encode()
		v := vaultAt(u.String())
		errCase(t, v, 1, []string{"host key", srv.Addr()}, "repo", "init")
	})
}

// quietCopy copies a live data directory's files into a new folder,
// skipping what the server removes while it is read and the tablespace
// links.
func quietCopy(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "data")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

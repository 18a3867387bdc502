package sftp_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/sshd"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/backendtest"
	"github.com/pgvault/pgvault/repo/backend/retry"
	"github.com/pgvault/pgvault/repo/backend/sftp"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	srv := sshd.Start(t)
	base := t.TempDir()
	var n atomic.Int64
	// After the (parallel) subtests: no temporary file survives a save.
	t.Cleanup(func() {
		files := 0
		err := filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				files++
			}
			if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
				t.Errorf("temporary file left behind: %s", p)
			}
			return err
		})
		if err != nil || files == 0 {
			t.Errorf("walk %s: %d files, %v", base, files, err)
		}
	})
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		b, err := sftp.New(srv.Options(filepath.Join(base, fmt.Sprint(n.Add(1)))))
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func TestLayoutMatchesFileBackend(t *testing.T) {
	t.Parallel()
	srv := sshd.Start(t)
	dir := t.TempDir()
	b, err := sftp.New(srv.Options(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := t.Context()
	for _, h := range []backend.Handle{
		{Type: backend.ConfigFile},
		{Type: backend.PackFile, Name: "abcdef"},
		{Type: backend.WALFile, Name: "00000001/000000010000000000000001"},
	} {
		if err := b.Save(ctx, h, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(h.Path()))); err != nil {
			t.Errorf("%v not stored at %s: %v", h, h.Path(), err)
		}
	}
	want := "sftp://" + srv.User + "@" + srv.Addr() + dir
	if got := b.Location(); got != want {
		t.Errorf("Location() = %q, want %q", got, want)
	}
}

func TestLeftoverTempFilesAreNotListed(t *testing.T) {
	t.Parallel()
	srv := sshd.Start(t)
	dir := t.TempDir()
	b, err := sftp.New(srv.Options(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := t.Context()
	h := backend.Handle{Type: backend.PackFile, Name: "ab01"}
	if err := b.Save(ctx, h, []byte("whole")); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"packs/ab/.tmp-0011", "packs/.tmp-2233", "wal/.tmp-4455"} {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		_ = os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte("ha"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, ft := range []backend.FileType{backend.PackFile, backend.WALFile} {
		var names []string
		if err := b.List(ctx, ft, func(fi backend.FileInfo) error { names = append(names, fi.Name); return nil }); err != nil {
			t.Fatal(err)
		}
		want := 0
		if ft == backend.PackFile {
			want = 1
		}
		if len(names) != want {
			t.Errorf("List(%v) = %q, want %d name(s)", ft, names, want)
		}
	}
}

func TestUnknownHostKeyIsPermanentWithFix(t *testing.T) {
	t.Parallel()
	srv := sshd.Start(t)
	other := filepath.Join(t.TempDir(), "known_hosts")
	// A known_hosts that knows other hosts, but not this one.
	if err := os.WriteFile(other, []byte("[127.0.0.1]:1 "+strings.TrimSpace(string(mustRead(t, srv.IdentityFile+".pub")))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := srv.Options(t.TempDir())
	opts.KnownHostsFile = other
	raw, err := sftp.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var retries atomic.Int64
	b := retry.New(raw, retry.Options{OnRetry: func(string, backend.Handle, int, error) { retries.Add(1) }})
	_, err = b.Stat(t.Context(), backend.Handle{Type: backend.ConfigFile})
	t.Logf("error: %v", err)
	if err == nil || !backend.IsPermanent(err) || errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("Stat with an unknown host key: %v, want a permanent error", err)
	}
	for _, want := range []string{"SFTP host key of " + srv.Addr(), "is unknown", fmt.Sprintf("ssh-keyscan -p %d 127.0.0.1 >> %s", srv.Port, other)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if retries.Load() != 0 {
		t.Errorf("retried %d times", retries.Load())
	}
}

func TestChangedHostKeyIsPermanent(t *testing.T) {
	t.Parallel()
	srv := sshd.Start(t)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	// The right host, the wrong key.
	line := fmt.Sprintf("[127.0.0.1]:%d %s", srv.Port, strings.TrimSpace(string(mustRead(t, srv.IdentityFile+".pub"))))
	if err := os.WriteFile(kh, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := srv.Options(t.TempDir())
	opts.KnownHostsFile = kh
	b, err := sftp.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, err = b.Stat(t.Context(), backend.Handle{Type: backend.ConfigFile})
	t.Logf("error: %v", err)
	if !backend.IsPermanent(err) || !strings.Contains(fmt.Sprint(err), "does not match") || !strings.Contains(fmt.Sprint(err), "man-in-the-middle") {
		t.Fatalf("Stat with a changed host key: %v, want a permanent mismatch error", err)
	}
}

func TestMissingKnownHostsFile(t *testing.T) {
	t.Parallel()
	srv := sshd.Start(t)
	opts := srv.Options("/x")
	opts.KnownHostsFile = filepath.Join(t.TempDir(), "nope")
	_, err := sftp.New(opts)
	if !backend.IsPermanent(err) || !strings.Contains(fmt.Sprint(err), "ssh-keyscan -p") {
		t.Fatalf("New with a missing known_hosts: %v, want a permanent error naming ssh-keyscan", err)
	}
}

func TestWrongKeyIsPermanent(t *testing.T) {
	t.Parallel()
	srv := sshd.Start(t)
	other := sshd.Start(t) // its client key is not authorized on srv
	opts := srv.Options(t.TempDir())
	opts.IdentityFile = other.IdentityFile
	b, err := sftp.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, err = b.Stat(t.Context(), backend.Handle{Type: backend.ConfigFile})
	t.Logf("error: %v", err)
	if !backend.IsPermanent(err) || !strings.Contains(fmt.Sprint(err), "login as "+srv.User+"@"+srv.Addr()+" refused") {
		t.Fatalf("Stat with an unauthorized key: %v, want a permanent login error", err)
	}
}

func TestServerRestartBetweenCalls(t *testing.T) {
	t.Parallel()
	srv := sshd.Start(t)
	opts := srv.Options(t.TempDir())
	opts.Connections = 1
	b, err := sftp.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := t.Context()
	h := backend.Handle{Type: backend.ConfigFile}
	if err := b.Save(ctx, h, []byte("before")); err != nil {
		t.Fatal(err)
	}
	srv.Restart() // kills the session the backend holds
	got, err := b.Load(ctx, h, 0, 0)
	if err != nil || string(got) != "before" {
		t.Fatalf("first call after a server restart: %q, %v", got, err)
	}
	if err := b.Save(ctx, h, []byte("after")); err != nil {
		t.Fatal(err)
	}

	// A call while the server is down fails (transient), and the next
	// call once it is back works.
	srv.Stop()
	if _, err := b.Stat(ctx, h); err == nil || backend.IsPermanent(err) {
		t.Fatalf("Stat with the server down: %v, want a transient error", err)
	} else {
		t.Logf("server down: %v", err)
	}
	srv.Restart()
	if fi, err := b.Stat(ctx, h); err != nil || fi.Size != int64(len("after")) {
		t.Fatalf("Stat after the server came back: %+v, %v", fi, err)
	}
}

func TestServerDownThenUpWithRetry(t *testing.T) {
	t.Parallel()
	srv := sshd.Start(t)
	raw, err := sftp.New(srv.Options(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// The server comes back once the save has failed against it three
	// times: the retries, not the timing, bridge the outage.
	failed := 0
	b := retry.New(raw, retry.Options{InitialDelay: 50 * time.Millisecond, MaxDelay: 500 * time.Millisecond, MaxAttempts: 40,
		OnRetry: func(op string, h backend.Handle, attempt int, err error) {
			if failed++; failed == 3 {
				srv.Restart()
			}
		}})
	srv.Stop()
	if err := b.Save(t.Context(), backend.Handle{Type: backend.KeyFile, Name: "k"}, []byte("x")); err != nil {
		t.Fatalf("Save across a server outage: %v", err)
	}
	if failed < 3 {
		t.Fatalf("the save failed %d times with the server down, want 3 before the restart", failed)
	}
}

func TestCancelDuringDialIsPrompt(t *testing.T) {
	t.Parallel()
	srv := sshd.Start(t)
	b, err := sftp.New(srv.Options(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if _, err := b.Stat(ctx, backend.Handle{Type: backend.ConfigFile}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stat with an expired context: %v", err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHungServerDoesNotWedge: a server that stops answering (connection
// open, nothing replies) fails calls within the keepalive and login
// timeouts instead of hanging, and the backend works again once the server
// answers.
func TestHungServerDoesNotWedge(t *testing.T) {
	t.Parallel()
	srv := sshd.Start(t)
	opts := srv.Options(t.TempDir())
	opts.Connections = 1
	opts.KeepAlive = 300 * time.Millisecond
	// Logins take up to a few seconds on a loaded 2-core machine.
	opts.Timeout = 3 * time.Second
	b, err := sftp.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := t.Context()
	h := backend.Handle{Type: backend.ConfigFile}
	if err := b.Save(ctx, h, []byte("x")); err != nil {
		t.Fatal(err)
	}
	srv.Freeze()
	thawed := false
	defer func() {
		if !thawed {
			srv.Thaw()
		}
	}()
	start := time.Now()
	_, err = b.Stat(ctx, h)
	t.Logf("hung server: %v after %v", err, time.Since(start).Round(time.Millisecond))
	if err == nil || backend.IsPermanent(err) {
		t.Fatalf("Stat on a hung server: %v, want a transient error", err)
	}
	// Keepalive (2 x 300 ms) plus one login attempt (3 s) at most.
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Stat on a hung server took %v", d)
	}
	srv.Thaw()
	thawed = true
	r := retry.New(b, retry.Options{MaxAttempts: 5, InitialDelay: 100 * time.Millisecond})
	if _, err := r.Stat(ctx, h); err != nil {
		t.Fatalf("Stat after the server answers again: %v", err)
	}
}

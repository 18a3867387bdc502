package swift_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/swiftaio"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/backendtest"
	"github.com/pgvault/pgvault/repo/backend/retry"
	"github.com/pgvault/pgvault/repo/backend/swift"
)

// TestSwift runs everything that needs a server against one Swift
// all-in-one: starting one costs seconds of Python imports.
func TestSwift(t *testing.T) {
	srv := swiftaio.Start(t)
	var n atomic.Int64
	fresh := func(t *testing.T) string { return fmt.Sprintf("t%d", n.Add(1)) }

	t.Run("Conformance", func(t *testing.T) {
		t.Parallel()
		backendtest.Run(t, func(t *testing.T) backend.Backend {
			// A fresh prefix per subtest keeps subtests apart in one
			// container; a small page size makes List page.
			opts := srv.Options("conformance/" + fresh(t))
			opts.PageSize = 3
			b, err := swift.New(opts)
			if err != nil {
				t.Fatal(err)
			}
			// As pgvault always uses a store: through the retry wrapper.
			// Eight writers overwriting one object (ConcurrentOverwriteIsAtomic)
			// make the proxy drop a PUT that lost a same-timestamp race
			// (the connection closed under the body), which is transient.
			// Short waits: the suite's deliberate short reads are retried too.
			return retry.New(b, retry.Options{MaxAttempts: 4, InitialDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond})
		})
	})
	t.Run("EmptyPrefix", func(t *testing.T) {
		t.Parallel()
		testEmptyPrefix(t, srv)
	})
	t.Run("WrongKeyIsPermanent", func(t *testing.T) {
		t.Parallel()
		opts := srv.Options(fresh(t))
		opts.Key = "wrong-secret-key"
		testDenied(t, opts, "wrong-secret-key")
	})
	t.Run("NoAccessIsPermanent", func(t *testing.T) {
		t.Parallel()
		opts := srv.Options(fresh(t))
		opts.User, opts.Key = swiftaio.ReaderUser, swiftaio.ReaderKey
		testDenied(t, opts, swiftaio.ReaderKey)
	})
	t.Run("PreAuthenticated", func(t *testing.T) {
		t.Parallel()
		testPreAuthenticated(t, srv)
	})
	t.Run("MissingContainerIsPermanent", func(t *testing.T) {
		t.Parallel()
		testMissingContainer(t, srv)
	})
}

func testEmptyPrefix(t *testing.T, srv *swiftaio.Server) {
	ctx := t.Context()
	opts := srv.Options("")
	opts.Container = "root-repo"
	b, err := swift.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.EnsureContainer(ctx); err != nil {
		t.Fatal(err)
	}
	for _, h := range []backend.Handle{
		{Type: backend.ConfigFile},
		{Type: backend.PackFile, Name: "abcdef"},
		{Type: backend.WALFile, Name: "00000001/000000010000000000000001"},
	} {
		if err := b.Save(ctx, h, []byte(h.Name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, ft := range []backend.FileType{backend.ConfigFile, backend.PackFile, backend.WALFile} {
		var names []string
		if err := b.List(ctx, ft, func(fi backend.FileInfo) error { names = append(names, fi.Name); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(names) != 1 {
			t.Errorf("List(%v) = %q, want one name", ft, names)
		}
	}
	if got, want := b.Location(), "swift://root-repo ("+srv.AuthURL+")"; got != want {
		t.Errorf("Location() = %q, want %q", got, want)
	}
}

// counting is a retry wrapper that records retries and give-ups.
func counting(b backend.Backend, attempts int) (*retry.Backend, *atomic.Int64, *atomic.Int64) {
	var retries, giveUps atomic.Int64
	return retry.New(b, retry.Options{
		MaxAttempts:  attempts,
		InitialDelay: 10 * time.Millisecond,
		MaxDelay:     20 * time.Millisecond,
		OnRetry:      func(string, backend.Handle, int, error) { retries.Add(1) },
		OnGiveUp:     func(string, backend.Handle, error) { giveUps.Add(1) },
	}), &retries, &giveUps
}

// testDenied: a wrong key (401 at authentication) and a user without
// access to the container (403) are permanent, never retried, never "not
// found", and no message shows the key.
func testDenied(t *testing.T, opts swift.Options, secret string) {
	ctx := t.Context()
	raw, err := swift.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	b, retries, _ := counting(raw, 5)
	h := backend.Handle{Type: backend.ConfigFile}
	ops := map[string]func() error{
		"save":   func() error { return b.Save(ctx, h, []byte("x")) },
		"load":   func() error { _, err := b.Load(ctx, h, 0, 0); return err },
		"stat":   func() error { _, err := b.Stat(ctx, h); return err },
		"remove": func() error { return b.Remove(ctx, h) },
		"list":   func() error { return b.List(ctx, backend.PackFile, func(backend.FileInfo) error { return nil }) },
	}
	for op, call := range ops {
		err := call()
		if err == nil || !backend.IsPermanent(err) {
			t.Errorf("%s: %v, want a permanent error", op, err)
			continue
		}
		if errors.Is(err, backend.ErrNotFound) {
			t.Errorf("%s reports not found: %v", op, err)
		}
		t.Logf("%s: %v", op, err)
		msg := err.Error()
		if !strings.Contains(msg, `Swift access denied for container "`+opts.Container+`"`) || !strings.Contains(msg, "check the credentials") {
			t.Errorf("%s: message %q does not say access was denied and what to check", op, msg)
		}
		if strings.Contains(msg, secret) {
			t.Errorf("%s: message shows the key", op)
		}
	}
	if n := retries.Load(); n != 0 {
		t.Errorf("permanent errors were retried %d times", n)
	}
}

// testPreAuthenticated: a storage URL and token got elsewhere (as the
// swift client's `auth` prints them) work without credentials, and the
// token shows in no message.
func testPreAuthenticated(t *testing.T, srv *swiftaio.Server) {
	ctx := t.Context()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.AuthURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-User", swiftaio.User)
	req.Header.Set("X-Auth-Key", swiftaio.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	storage, token := resp.Header.Get("X-Storage-Url"), resp.Header.Get("X-Auth-Token")
	if resp.StatusCode != http.StatusOK || storage == "" || token == "" {
		t.Fatalf("tempauth: %s, storage URL %q, token set %v", resp.Status, storage, token != "")
	}
	b, err := swift.New(swift.Options{Container: srv.Container, Prefix: "preauth", StorageURL: storage, AuthToken: token})
	if err != nil {
		t.Fatal(err)
	}
	h := backend.Handle{Type: backend.ConfigFile}
	if err := b.Save(ctx, h, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Load(ctx, h, 0, 0); err != nil || string(got) != "x" {
		t.Fatalf("Load: %q, %v", got, err)
	}
	bad, err := swift.New(swift.Options{Container: srv.Container, StorageURL: storage, AuthToken: "AUTH_tk" + strings.Repeat("0", 32)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.Stat(ctx, h)
	t.Logf("a wrong token: %v", err)
	if err == nil || !backend.IsPermanent(err) || strings.Contains(err.Error(), strings.Repeat("0", 32)) {
		t.Fatalf("Stat with a wrong token: %v, want a permanent error that does not show the token", err)
	}
}

func testMissingContainer(t *testing.T, srv *swiftaio.Server) {
	ctx := t.Context()
	opts := srv.Options("x")
	opts.Container = "no-such-container"
	b, err := swift.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for op, err := range map[string]error{
		"save": b.Save(ctx, backend.Handle{Type: backend.ConfigFile}, []byte("x")),
		"list": b.List(ctx, backend.KeyFile, func(backend.FileInfo) error { return nil }),
	} {
		t.Logf("%s: %v", op, err)
		if !backend.IsPermanent(err) || !strings.Contains(fmt.Sprint(err), `Swift container "no-such-container" does not exist`) {
			t.Errorf("%s: %v, want a permanent error saying the container does not exist", op, err)
		}
	}
	if _, err := b.Stat(ctx, backend.Handle{Type: backend.ConfigFile}); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("Stat in a missing container: %v, want not found", err)
	}
	if err := b.EnsureContainer(ctx); err != nil {
		t.Fatalf("EnsureContainer: %v", err)
	}
	if err := b.EnsureContainer(ctx); err != nil {
		t.Fatalf("EnsureContainer of an existing container: %v", err)
	}
	if err := b.Save(ctx, backend.Handle{Type: backend.ConfigFile}, []byte("x")); err != nil {
		t.Fatalf("Save after EnsureContainer: %v", err)
	}
}

func TestLocationHasNoSecrets(t *testing.T) {
	t.Parallel()
	b, err := swift.New(swift.Options{
		Container: "c", Prefix: "/a/b/", AuthURL: "https://keystone.example:5000/v3",
		User: "u", Key: "very-secret-key", Project: "p",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.Location(), "swift://c/a/b (https://keystone.example:5000/v3)"; got != want {
		t.Errorf("Location() = %q, want %q", got, want)
	}
}

func TestBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts swift.Options
		want string
	}{
		{"no container", swift.Options{AuthURL: "http://x/v1.0"}, "no container"},
		{"slash in container", swift.Options{Container: "a/b", AuthURL: "http://x/v1.0"}, "contains a slash"},
		{"no credentials", swift.Options{Container: "c"}, "set OS_AUTH_URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"OS_AUTH_URL", "ST_AUTH", "OS_STORAGE_URL", "OS_AUTH_TOKEN"} {
				t.Setenv(k, "")
			}
			_, err := swift.New(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !backend.IsPermanent(err) {
				t.Fatalf("New: %v, want a permanent error containing %q", err, tc.want)
			}
		})
	}
}

// TestCredentialsFromEnvironment: what Options leaves empty comes from
// the OS_* or ST_* variables.
func TestCredentialsFromEnvironment(t *testing.T) {
	t.Setenv("ST_AUTH", "http://127.0.0.1:1/auth/v1.0")
	t.Setenv("ST_USER", "test:tester")
	t.Setenv("ST_KEY", "env-secret")
	b, err := swift.New(swift.Options{Container: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.Location(), "swift://c (http://127.0.0.1:1/auth/v1.0)"; got != want {
		t.Errorf("Location() = %q, want %q", got, want)
	}
	// Nothing listens on port 1: the error is transient, names the
	// server and does not show the key.
	_, err = b.Stat(t.Context(), backend.Handle{Type: backend.ConfigFile})
	if err == nil || backend.IsPermanent(err) || !strings.Contains(err.Error(), "unreachable") || strings.Contains(err.Error(), "env-secret") {
		t.Fatalf("Stat against a closed port: %v", err)
	}
}

func TestUnreachableIsRetriedThenOneClearError(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	raw, err := swift.New(swift.Options{Container: "c", AuthURL: "http://" + addr + "/auth/v1.0", User: "u:u", Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	b, retries, giveUps := counting(raw, 3)
	start := time.Now()
	_, err = b.Load(t.Context(), backend.Handle{Type: backend.ConfigFile}, 0, 0)
	if err == nil || backend.IsPermanent(err) {
		t.Fatalf("Load from a closed port: %v, want a transient error", err)
	}
	if retries.Load() != 2 || giveUps.Load() != 1 {
		t.Errorf("retries %d, give-ups %d; want 2 and 1", retries.Load(), giveUps.Load())
	}
	t.Logf("error: %v", err)
	msg := err.Error()
	for _, want := range []string{"giving up after 3 attempts", "Swift server http://" + addr + "/auth/v1.0 unreachable", "connection refused"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error spans several lines: %q", msg)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}

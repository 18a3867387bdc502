package gcs_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/fakegcs"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/backendtest"
	"github.com/pgvault/pgvault/repo/backend/gcs"
	"github.com/pgvault/pgvault/repo/backend/retry"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	srv := fakegcs.Start(t)
	var n atomic.Int64
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		// A fresh prefix per subtest keeps subtests apart in one bucket.
		b, err := gcs.New(t.Context(), srv.Options(fmt.Sprintf("conformance/%d", n.Add(1))))
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

// TestConformanceResumable runs the suite with a small part size, so every
// object above 256 KiB goes up as a resumable upload in parts.
func TestConformanceResumable(t *testing.T) {
	t.Parallel()
	srv := fakegcs.Start(t)
	var n atomic.Int64
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		o := srv.Options(fmt.Sprintf("resumable/%d", n.Add(1)))
		o.ChunkSize = 256 << 10
		b, err := gcs.New(t.Context(), o)
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

// TestEmulatorHostFromEnvironment: with no endpoint given, the backend
// talks to STORAGE_EMULATOR_HOST without credentials, as the library does.
func TestEmulatorHostFromEnvironment(t *testing.T) {
	srv := fakegcs.Start(t)
	for _, e := range srv.Env() {
		k, v, _ := strings.Cut(e, "=")
		t.Setenv(k, v)
	}
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")
	ctx := t.Context()
	b, err := gcs.New(ctx, gcs.Options{Bucket: srv.Bucket, Prefix: "env"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	h := backend.Handle{Type: backend.ConfigFile}
	if err := b.Save(ctx, h, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if got, want := b.Location(), "gs://"+srv.Bucket+"/env ("+srv.Endpoint+")"; got != want {
		t.Errorf("Location() = %q, want %q", got, want)
	}
}

// TestEmptyPrefix: a repository at the bucket root.
func TestEmptyPrefix(t *testing.T) {
	t.Parallel()
	srv := fakegcs.Start(t)
	ctx := t.Context()
	b, err := gcs.New(ctx, srv.Options(""))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
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
	if got, want := b.Location(), "gs://"+srv.Bucket+" ("+srv.Endpoint+")"; got != want {
		t.Errorf("Location() = %q, want %q", got, want)
	}
}

func TestBadOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts gcs.Options
		want string
	}{
		{"no bucket", gcs.Options{}, "no bucket"},
		{"bad endpoint", gcs.Options{Bucket: "b", Endpoint: "ftp://x"}, "bad endpoint"},
		{"endpoint with user", gcs.Options{Bucket: "b", Endpoint: "http://u:secret@x"}, "bad endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := gcs.New(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !backend.IsPermanent(err) {
				t.Fatalf("New: %v, want a permanent error containing %q", err, tc.want)
			}
		})
	}
}

// TestNoCredentialsIsPermanent: without an emulator and without usable
// credentials, New fails once, saying what to set, and shows no key.
func TestNoCredentialsIsPermanent(t *testing.T) {
	t.Setenv("STORAGE_EMULATOR_HOST", "")
	t.Setenv("HOME", t.TempDir()) // no gcloud application default credentials
	t.Setenv("GCE_METADATA_HOST", "127.0.0.1:1")
	t.Setenv("NO_GCE_CHECK", "true")
	key := t.TempDir() + "/key.json"
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", key)
	_, err := gcs.New(t.Context(), gcs.Options{Bucket: "b"})
	t.Logf("error: %v", err)
	if err == nil || !backend.IsPermanent(err) || !strings.Contains(err.Error(), "GOOGLE_APPLICATION_CREDENTIALS") {
		t.Fatalf("New without credentials: %v, want a permanent error naming GOOGLE_APPLICATION_CREDENTIALS", err)
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

func TestMissingBucketIsPermanent(t *testing.T) {
	t.Parallel()
	srv := fakegcs.Start(t)
	ctx := t.Context()
	opts := srv.Options("x")
	opts.Bucket = "no-such-bucket"
	raw, err := gcs.New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	b, retries, _ := counting(raw, 5)
	for op, err := range map[string]error{
		"save": b.Save(ctx, backend.Handle{Type: backend.ConfigFile}, []byte("x")),
		"list": b.List(ctx, backend.KeyFile, func(backend.FileInfo) error { return nil }),
	} {
		t.Logf("%s: %v", op, err)
		if !backend.IsPermanent(err) || !strings.Contains(fmt.Sprint(err), `GCS bucket "no-such-bucket" does not exist`) {
			t.Errorf("%s: %v, want a permanent error saying the bucket does not exist", op, err)
		}
	}
	if n := retries.Load(); n != 0 {
		t.Errorf("permanent errors were retried %d times", n)
	}
	if err := raw.EnsureBucket(ctx); err == nil || !strings.Contains(err.Error(), "project") {
		t.Fatalf("EnsureBucket without a project: %v, want an error asking for one", err)
	}
	opts.Project = fakegcs.Project
	withProject, err := gcs.New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer withProject.Close()
	for range 2 {
		if err := withProject.EnsureBucket(ctx); err != nil {
			t.Fatalf("EnsureBucket: %v", err)
		}
	}
	if err := withProject.Save(ctx, backend.Handle{Type: backend.ConfigFile}, []byte("x")); err != nil {
		t.Fatalf("Save after EnsureBucket: %v", err)
	}
}

func TestUnreachableEndpointIsRetriedThenOneClearError(t *testing.T) {
	t.Parallel()
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	raw, err := gcs.New(t.Context(), gcs.Options{Bucket: "b", Endpoint: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	b, retries, giveUps := counting(raw, 3)
	start := time.Now()
	for op, call := range map[string]func() error{
		"load": func() error {
			_, err := b.Load(t.Context(), backend.Handle{Type: backend.ConfigFile}, 0, 0)
			return err
		},
		"save": func() error { return b.Save(t.Context(), backend.Handle{Type: backend.ConfigFile}, []byte("x")) },
	} {
		retries.Store(0)
		giveUps.Store(0)
		err := call()
		if err == nil || backend.IsPermanent(err) {
			t.Fatalf("%s to a closed port: %v, want a transient error", op, err)
		}
		if retries.Load() != 2 || giveUps.Load() != 1 {
			t.Errorf("%s: retries %d, give-ups %d; want 2 and 1", op, retries.Load(), giveUps.Load())
		}
		t.Logf("%s: %v", op, err)
		msg := err.Error()
		for _, want := range []string{"giving up after 3 attempts", "GCS endpoint http://" + addr + " unreachable", "connection refused"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: error %q does not contain %q", op, msg, want)
			}
		}
		if strings.Contains(msg, "\n") {
			t.Errorf("%s: error spans several lines: %q", op, msg)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}

// TestStoppedServerIsTransient: a server that went away mid-repository is
// a transient error, never ErrNotFound.
func TestStoppedServerIsTransient(t *testing.T) {
	t.Parallel()
	srv := fakegcs.Start(t)
	ctx := t.Context()
	b, err := gcs.New(ctx, srv.Options("stopped"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	srv.Stop()
	_, err = b.Stat(ctx, backend.Handle{Type: backend.ConfigFile})
	if err == nil || backend.IsPermanent(err) || errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("Stat against a stopped server: %v, want a transient error", err)
	}
}

// TestRefusedCredentialsArePermanentAndSecretFree: a service account key
// whose token request is refused fails at once, in one line that shows
// neither the key nor the token endpoint's answer. Google's token endpoint
// is not reachable from tests: a local one refuses the key as it would.
func TestRefusedCredentialsArePermanentAndSecretFree(t *testing.T) {
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"invalid_client","error_description":"TOKEN-ENDPOINT-BODY"}`)
	}))
	defer tokens.Close()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	sa, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "p", "private_key_id": "KEYID-SECRET",
		"private_key": pemKey, "client_email": "pgvault@p.iam.gserviceaccount.com",
		"client_id": "1", "token_uri": tokens.URL + "/token",
	})
	file := filepath.Join(t.TempDir(), "key.json")
	if err := os.WriteFile(file, sa, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("STORAGE_EMULATOR_HOST", "")
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", file)
	raw, err := gcs.New(t.Context(), gcs.Options{Bucket: "b", Prefix: "p"})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	b, retries, _ := counting(raw, 5)
	err = b.Save(t.Context(), backend.Handle{Type: backend.ConfigFile}, []byte("x"))
	t.Logf("error: %v", err)
	if err == nil || !backend.IsPermanent(err) || !strings.Contains(err.Error(), "Google credentials refused") {
		t.Fatalf("Save with a refused key: %v, want a permanent error saying the credentials were refused", err)
	}
	if retries.Load() != 0 {
		t.Errorf("a refused key was retried %d times", retries.Load())
	}
	msg := err.Error()
	for _, secret := range []string{"PRIVATE KEY", pemKey[40:80], "KEYID-SECRET", "TOKEN-ENDPOINT-BODY", "\n"} {
		if strings.Contains(msg, secret) {
			t.Errorf("error shows %q: %s", secret, msg)
		}
	}
}

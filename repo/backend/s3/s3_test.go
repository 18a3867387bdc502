package s3_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/minio"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/backendtest"
	"github.com/pgvault/pgvault/repo/backend/retry"
	"github.com/pgvault/pgvault/repo/backend/s3"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	srv := minio.Start(t)
	var n atomic.Int64
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		// A fresh prefix per subtest keeps subtests apart in one bucket.
		b, err := s3.New(t.Context(), srv.Options(fmt.Sprintf("conformance/%d", n.Add(1))))
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

// TestEmptyPrefix: a repository at the bucket root.
func TestEmptyPrefix(t *testing.T) {
	t.Parallel()
	srv := minio.Start(t)
	ctx := t.Context()
	b, err := s3.New(ctx, srv.Options(""))
	if err != nil {
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
	if got, want := b.Location(), "s3://"+srv.Bucket+" ("+srv.Endpoint+")"; got != want {
		t.Errorf("Location() = %q, want %q", got, want)
	}
}

func TestLocationHasNoSecrets(t *testing.T) {
	t.Parallel()
	b, err := s3.New(context.Background(), s3.Options{
		Bucket: "bkt", Prefix: "/a/b/", Endpoint: "127.0.0.1:9000", Insecure: true,
		AccessKey: "AKIDSECRETLOOKING", SecretKey: "very-secret-key", Region: "eu-west-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.Location(), "s3://bkt/a/b (http://127.0.0.1:9000)"; got != want {
		t.Errorf("Location() = %q, want %q", got, want)
	}
}

func TestBadOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts s3.Options
		want string
	}{
		{"no bucket", s3.Options{}, "no bucket"},
		{"half credentials", s3.Options{Bucket: "b", AccessKey: "x"}, "both an access key and a secret key"},
		{"bad endpoint", s3.Options{Bucket: "b", Endpoint: "ftp://x"}, "bad endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s3.New(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !backend.IsPermanent(err) {
				t.Fatalf("New: %v, want a permanent error containing %q", err, tc.want)
			}
		})
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

func TestWrongCredentialsArePermanent(t *testing.T) {
	t.Parallel()
	srv := minio.Start(t)
	ctx := t.Context()
	opts := srv.Options("creds")
	opts.SecretKey = "wrong-" + opts.SecretKey
	raw, err := s3.New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, retries, _ := counting(raw, 5)
	h := backend.Handle{Type: backend.ConfigFile}
	ops := map[string]func() error{
		"save": func() error { return b.Save(ctx, h, []byte("x")) },
		"load": func() error { _, err := b.Load(ctx, h, 0, 0); return err },
		"stat": func() error { _, err := b.Stat(ctx, h); return err },
		"list": func() error { return b.List(ctx, backend.PackFile, func(backend.FileInfo) error { return nil }) },
	}
	for op, call := range ops {
		err := call()
		if err == nil || !backend.IsPermanent(err) {
			t.Errorf("%s with a wrong secret: %v, want a permanent error", op, err)
			continue
		}
		if errors.Is(err, backend.ErrNotFound) {
			t.Errorf("%s with a wrong secret reports not found: %v", op, err)
		}
		t.Logf("%s: %v", op, err)
		msg := err.Error()
		if !strings.Contains(msg, "S3 access denied for bucket \""+srv.Bucket+"\"") || !strings.Contains(msg, "check access key and secret") {
			t.Errorf("%s: message %q does not say access was denied and what to check", op, msg)
		}
		if strings.Contains(msg, opts.SecretKey) {
			t.Errorf("%s: message shows the secret", op)
		}
	}
	if n := retries.Load(); n != 0 {
		t.Errorf("permanent errors were retried %d times", n)
	}
}

func TestMissingBucketIsPermanent(t *testing.T) {
	t.Parallel()
	srv := minio.Start(t)
	ctx := t.Context()
	opts := srv.Options("x")
	opts.Bucket = "no-such-bucket"
	b, err := s3.New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	for op, err := range map[string]error{
		"save": b.Save(ctx, backend.Handle{Type: backend.ConfigFile}, []byte("x")),
		"list": b.List(ctx, backend.KeyFile, func(backend.FileInfo) error { return nil }),
	} {
		t.Logf("%s: %v", op, err)
		if !backend.IsPermanent(err) || !strings.Contains(fmt.Sprint(err), `S3 bucket "no-such-bucket" does not exist`) {
			t.Errorf("%s: %v, want a permanent error saying the bucket does not exist", op, err)
		}
	}
	if err := b.EnsureBucket(ctx); err != nil {
		t.Fatalf("EnsureBucket: %v", err)
	}
	if err := b.EnsureBucket(ctx); err != nil {
		t.Fatalf("EnsureBucket of an existing bucket: %v", err)
	}
	if err := b.Save(ctx, backend.Handle{Type: backend.ConfigFile}, []byte("x")); err != nil {
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
	raw, err := s3.New(t.Context(), s3.Options{
		Bucket: "b", Endpoint: "http://" + addr, Region: "us-east-1", PathStyle: true,
		AccessKey: "k", SecretKey: "s",
	})
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
	for _, want := range []string{"giving up after 3 attempts", "S3 endpoint http://" + addr + " unreachable", "connection refused"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Count(msg, "\n") > 0 {
		t.Errorf("error spans several lines: %q", msg)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}

package swiftaio_test

import (
	"context"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/swiftaio"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/swift"
)

func TestStartRestartStop(t *testing.T) {
	began := time.Now()
	srv := swiftaio.Start(t)
	t.Logf("started in %v", time.Since(began))
	ctx := context.Background()
	b, err := swift.New(srv.Options("smoke"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	h := backend.Handle{Type: backend.ConfigFile}
	if err := b.Save(ctx, h, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	srv.Restart()
	t.Logf("restarted in %v", time.Since(began))
	// The restart emptied memcached, so the proxy refuses the backend's
	// token: the Load renews it itself (no retry wrapper here).
	got, err := b.Load(ctx, h, 0, 0)
	if err != nil || string(got) != "hello" {
		t.Fatalf("after restart: %q, %v", got, err)
	}
	srv.Kill()
	if _, err := b.Load(ctx, h, 0, 0); err == nil || backend.IsPermanent(err) {
		t.Fatalf("Load from a killed server: %v, want a transient error", err)
	}
	srv.Restart()
	if got, err := b.Load(ctx, h, 0, 0); err != nil || string(got) != "hello" {
		t.Fatalf("after kill and restart: %q, %v", got, err)
	}
}

package fakegcs_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/integration/fakegcs"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/gcs"
)

// TestStartRestartStop: objects survive a restart and a kill -9; a stopped
// server refuses requests.
func TestStartRestartStop(t *testing.T) {
	srv := fakegcs.Start(t)
	ctx := context.Background()
	b, err := gcs.New(ctx, srv.Options("smoke"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	h := backend.Handle{Type: backend.ConfigFile}
	if err := b.Save(ctx, h, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	srv.Restart()
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

func TestMissingBinaryNamesTheFix(t *testing.T) {
	t.Setenv("PGVAULT_FAKE_GCS", filepath.Join(t.TempDir(), "no-fake-gcs"))
	_, err := fakegcs.Binary()
	if err == nil || !strings.Contains(err.Error(), "run `make deps`") {
		t.Fatalf("Binary() with a missing binary: %v, want the fix named", err)
	}
}

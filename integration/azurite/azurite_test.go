package azurite_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/integration/azurite"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/azure"
)

func TestStartRestartStop(t *testing.T) {
	srv := azurite.Start(t)
	ctx := context.Background()
	b, err := azure.New(ctx, srv.Options("smoke"))
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
	srv.Stop()
	if _, err := b.Load(ctx, h, 0, 0); err == nil {
		t.Fatal("Load from a stopped server succeeded")
	} else if backend.IsPermanent(err) {
		t.Fatalf("Load from a stopped server: %v, want a transient error", err)
	}
	srv.Restart()
	if _, err := b.Load(ctx, h, 0, 0); err != nil {
		t.Fatalf("after stop and restart: %v", err)
	}
}

func TestMissingBinaryNamesTheFix(t *testing.T) {
	t.Setenv("PGVAULT_AZURITE", filepath.Join(t.TempDir(), "no-azurite"))
	_, err := azurite.Binary()
	if err == nil || !strings.Contains(err.Error(), "run `make deps`") {
		t.Fatalf("Binary() with a missing binary: %v, want the fix named", err)
	}
}

package repo

import (
	"context"
	"testing"

	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/mem"
)

// TestPassword is the password of repositories made by TestRepository.
const TestPassword = "correct horse battery staple"

// TestKDF is a cheap key derivation for tests only.
func TestKDF() KDFParams { return KDFParams{Time: 1, Memory: 64, Threads: 1} }

// TestRepository returns an open, encrypted repository on a fresh
// in-memory backend, with a fast KDF and small packs so tests exercise
// pack boundaries. It is closed when the test ends.
func TestRepository(t testing.TB) (*Repository, *mem.Backend) {
	t.Helper()
	be := mem.New()
	return TestRepositoryOn(t, be, Options{PackSize: 256 << 10}), be
}

// TestRepositoryOn initialises and opens a test repository on be.
func TestRepositoryOn(t testing.TB, be backend.Backend, opts Options) *Repository {
	t.Helper()
	ctx := context.Background()
	if _, err := Init(ctx, be, InitOptions{Password: []byte(TestPassword), KDF: TestKDF()}); err != nil {
		t.Fatalf("init test repository: %v", err)
	}
	r, err := Open(ctx, be, []byte(TestPassword), opts)
	if err != nil {
		t.Fatalf("open test repository: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

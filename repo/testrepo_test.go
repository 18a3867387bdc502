package repo

import (
	"testing"

	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/mem"
)

// The repo package's own tests cannot import repotest (it imports repo);
// these are its helpers, on the same InitAndOpen.

const testPassword = "correct horse battery staple"

func testKDF() KDFParams { return KDFParams{Time: 1, Memory: 64, Threads: 1} }

// newTestRepo is repotest.New.
func newTestRepo(t testing.TB) (*Repository, *mem.Backend) {
	t.Helper()
	be := mem.New()
	return newTestRepoOn(t, be, Options{PackSize: 256 << 10}), be
}

// newTestRepoOn is repotest.NewOn.
func newTestRepoOn(t testing.TB, be backend.Backend, opts Options) *Repository {
	t.Helper()
	r, err := InitAndOpen(ctx, be, InitOptions{Password: []byte(testPassword), KDF: testKDF()}, opts)
	if err != nil {
		t.Fatalf("test repository: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

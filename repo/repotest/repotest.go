package repotest

import (
	"context"
	"testing"

	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/mem"
)

// Password is the password of the repositories New and NewOn make.
const Password = "correct horse battery staple"

// KDF is a cheap key derivation, for tests only.
func KDF() repo.KDFParams { return repo.KDFParams{Time: 1, Memory: 64, Threads: 1} }

// New returns an open repository on a fresh in-memory backend, with small
// packs so that tests cross pack boundaries. It is closed when the test
// ends.
func New(t testing.TB) (*repo.Repository, *mem.Backend) {
	t.Helper()
	be := mem.New()
	return NewOn(t, be, repo.Options{PackSize: 256 << 10}), be
}

// NewOn creates a repository on be, with Password and KDF, and opens it
// with opts. It is closed when the test ends.
func NewOn(t testing.TB, be backend.Backend, opts repo.Options) *repo.Repository {
	t.Helper()
	r, err := repo.InitAndOpen(context.Background(), be, repo.InitOptions{Password: []byte(Password), KDF: KDF()}, opts)
	if err != nil {
		t.Fatalf("test repository: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

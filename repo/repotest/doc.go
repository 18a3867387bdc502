// Package repotest makes repositories for tests: encrypted, on an
// in-memory backend or one the test gives, with a cheap key derivation.
// It links package testing and the in-memory backend, so only tests may
// import it (layers_test.go keeps it out of the release binary). The
// repo package's own tests cannot import it (an import cycle); they have
// a helper of their own on the same repo.InitAndOpen.
package repotest

// Package fstest holds the fixtures that the tests of fs and fs/overlay
// share: a small data directory (files, folders, a link), stored as a
// snapshot of an in-memory repository; deterministic random bytes; and a
// repository holding WAL catalogue entries whose loads are counted.
//
// It is for tests only. layers_test.go lists it among the test-only
// packages: no non-test package may import it, and the release binary
// does not link it. It imports neither fs nor fs/overlay, so that the
// in-package tests of both can use it.
package fstest

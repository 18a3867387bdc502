// Package pushgateway starts a real Prometheus Pushgateway for tests: on a
// free port of 127.0.0.1, stopped when the test ends, with a helper that
// reads back what was pushed.
//
// The binary is not vendored: `make deps` builds it into
// $HOME/.cache/pgvault/bin/pushgateway with `go install
// github.com/prometheus/pushgateway@` Version (about 10 s), or point
// $PGVAULT_PUSHGATEWAY at one. A test that finds no binary fails with that
// fix; it never skips.
package pushgateway

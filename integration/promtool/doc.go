// Package promtool finds Prometheus's promtool for tests that check and
// evaluate docs/monitoring/alerts.yml (`promtool check rules`, `promtool
// test rules`).
//
// promtool is not vendored: `make deps` (.ci/install-deps) builds it with
// `go install github.com/prometheus/prometheus/cmd/promtool@VERSION` into
// $HOME/.cache/pgvault/bin/promtool (or point $PGVAULT_PROMTOOL at one).
// A test that finds no binary fails with that fix; it never skips.
package promtool

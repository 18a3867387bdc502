// Package fakegcs starts a real Google Cloud Storage API server for tests:
// fake-gcs-server (github.com/fsouza/fake-gcs-server) on a free port of
// 127.0.0.1, over plain http, storing objects in a temporary folder (so a
// restart keeps them), with one bucket, stopped when the test ends.
//
// The binary is not vendored: `make deps` (.ci/install-fake-gcs) builds it
// into $HOME/.cache/pgvault/bin/fake-gcs-server, or point
// $PGVAULT_FAKE_GCS at one. A test that finds no binary fails with that fix;
// it never skips.
package fakegcs

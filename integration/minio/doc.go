// Package minio starts a real MinIO S3 server for tests: on a free port of
// 127.0.0.1, with a temporary data folder, generated credentials and one
// bucket, stopped when the test ends.
//
// The MinIO binary is not vendored: `make deps` builds it into
// $HOME/.cache/pgvault/bin/minio (or point $PGVAULT_MINIO at one). A test
// that finds no binary fails with that fix; it never skips.
package minio

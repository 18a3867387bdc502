// Package integration holds pgvault's end-to-end tests: they build the
// pgvault binary, start real PostgreSQL clusters (integration/pgtest), real
// S3 (integration/minio) and SFTP (integration/sshd) servers, and drive the
// binary as an operator would. Peer benchmarks live here too, behind the
// "bench" build tag (make bench).
package integration

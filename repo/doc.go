// Package repo is the pgvault repository: a deduplicating, encrypted store
// of blobs in pack files on a backend, with an index, snapshot manifests,
// a WAL catalogue, locks, check and stats.
//
// It knows nothing of PostgreSQL. Callers (backup, stream, fs) save streams
// of files as snapshots, read any byte range of any file back, and store WAL
// segments as opaque named byte strings by timeline.
//
// Durability: SaveBlob only queues a blob; Flush makes every blob queued
// before it durable and indexed. A snapshot is written only after its
// blobs and index are durable, so a listed snapshot is always complete.
package repo

// Package fs is pgvault's FUSE filesystem (go-fuse/v2): it shows backups
// as directory trees and turns one backup, or one point in time, into a
// data directory that stock PostgreSQL starts on at once.
//
// # Modes
//
// Browse mode (NewBrowseRoot) is read-only:
//
//	snapshots/<id>/...      each snapshot as its data directory tree
//	snapshots/latest     -> the newest snapshot
//	wal/<timeline>/<name>   every WAL file of the catalogue, byte-exact
//
// Instant mode (OpenOverlay + NewInstantRoot) shows one snapshot as a
// writable data directory. Reads of untouched content come lazily from
// the repository; every change goes to a copy-on-write overlay in a
// scratch folder: per-block (8 KiB) tracking of changed ranges in a
// sparse upper file per file, and a journal of namespace changes and
// block-map updates that survives kill -9 of the mount process (what an
// fsync acknowledged is there after a remount with the same scratch).
// docs/explanation/mount.md describes the formats and why they are
// crash-consistent.
//
// # Reads
//
// File content is fetched chunk by chunk through the repository's bounded
// blob cache, which merges concurrent loads of one chunk. Each open file
// detects sequential access and prefetches the next chunks in parallel
// (Prefetcher). Immutable content is served with long entry and attribute
// timeouts and FOPEN_KEEP_CACHE, so the kernel page cache keeps it.
//
// # Contract
//
// Nothing in this package writes to the repository: it uses only the
// repository's read API (LoadTree, OpenNode, LoadBlob, LoadWALFile, ...).
// A repository read error becomes EIO on that read and a log line naming
// the chunk; wrong bytes are never returned. Every FUSE method maps errors
// through toErrno.
//
// FUSE nodes are unit-tested by calling their methods (NewNodeFS without a
// mount); real mounts are exercised in integration/.
package fs

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
// Instant mode (overlay.Open, then NewInstantRoot) shows one snapshot as
// a writable data directory, plus the WAL view (WALDirName) that
// restore_command copies from. The nodes are a thin FUSE face over the
// copy-on-write engine of package fs/overlay, which holds all the state:
// reads of untouched content come lazily from the repository, every
// change goes to the overlay's scratch folder and survives kill -9 of the
// mount process once fsynced. docs/explanation/mount.md describes the
// formats and why they are crash-consistent.
//
// # Packages
//
//	fs            the go-fuse nodes (browse, instant, WAL view), Mount, Unmount
//	fs/overlay    the copy-on-write engine: namespace, block maps, journal,
//	              copy-on-read, hydration, warm-up, Changes; no FUSE
//	fs/chunkread  chunk reads with sequential readahead (Prefetcher)
//	fs/inode      deterministic inode numbers and mode bits
//	fs/verify     checks that a backup restores (chunks, or a boot on a mount)
//
// # Reads
//
// File content is fetched chunk by chunk through the repository's bounded
// blob cache, which merges concurrent loads of one chunk. Each open file
// detects sequential access and prefetches the next chunks in parallel
// (chunkread.Prefetcher). Immutable content is served with long entry
// and attribute timeouts and FOPEN_KEEP_CACHE, so the kernel page cache
// keeps it.
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

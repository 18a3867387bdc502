// Package overlay is the copy-on-write engine behind an instant mount: a
// writable view of one snapshot whose every change is kept in a scratch
// folder, readable and writable without FUSE. The FUSE nodes of package
// fs are a thin face over it; a synthetic backup reads what changed
// (Changes, OpenFile) from the same scratch folder with no mount at all.
//
// # State
//
// Open takes the scratch folder (locked until Close) and replays its
// journal. A regular file is either layered, each 8 KiB block coming from
// its sparse upper file when the file's block map has it and from the
// snapshot otherwise, or local, held whole in the upper file. The journal
// is an append-only log of namespace changes (create, remove, rename,
// setattr), block maps as of each fsync, and WAL references (CloneWAL);
// live operations and replay apply its records through one function, so
// a remount rebuilds exactly the state the operations built.
// docs/explanation/mount.md describes the formats and why they are
// crash-consistent: what Fsync or Sync acknowledged survives a kill -9
// of the process.
//
// # Contract
//
// An Overlay is safe for concurrent use. Node operations (Lookup, List,
// Create, Remove, Rename, Setattr, Readlink, Read, Write, Allocate, Fsync)
// take the *Node handles Root and Lookup return; path operations (Exists,
// Stat, ReadFile, WriteFile, RemovePath, OpenFile) walk from the root.
// Errors meant for the kernel are syscall.Errno values: ENOENT means not
// found (errors.Is(err, fs.ErrNotExist) holds too). A repository read
// failure is an error naming what was read, counted in Stats, never wrong
// or zero bytes.
//
// The overlay never writes to the repository. In the background it may
// copy snapshot content that reads fetched into the scratch folder
// (copy-on-read), copy all of it (Hydrate), and warm the repository's
// blob cache (WarmStartup, WarmCatalogs); Prepare readies a fresh view for
// PostgreSQL. This package imports no FUSE library and no part of fs.
package overlay

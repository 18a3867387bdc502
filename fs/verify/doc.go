// Package verify checks that a backup can be restored, two ways:
//
//   - Chunks reads every chunk of a snapshot and of the WAL its recovery
//     needs, letting the repository authenticate each one (a damaged or
//     missing chunk is a Problem naming the file and the chunk);
//   - Boot mounts the snapshot in instant mode (package fs) in temporary
//     folders, starts stock PostgreSQL on it as a non-root user, waits
//     for recovery to reach its goal, runs pg_amcheck and an SQL check,
//     and stops and unmounts everything, timing each phase.
//
// Neither writes to the repository. Problems are reported in the result;
// an error means the check could not run.
package verify

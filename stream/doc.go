// Package stream moves PostgreSQL write-ahead log between a cluster and the
// repository's WAL catalogue (repo.SaveWAL, LoadWAL, ListWAL), and checks
// that the cluster and the archive are fit for it.
//
// Into the repository:
//
//   - the Receiver streams WAL over a physical replication slot
//     (START_REPLICATION), storing the segment being written as
//     "<segment>.partial" and the completed segment under its own name;
//   - Push archives one file handed over by archive_command
//     (`pgvault wal push %p`): segments, the ".partial" segment PostgreSQL
//     archives at promotion, timeline history files and backup history
//     files. Every file is checked against its name before anything is
//     stored (VerifyFile): a segment whose page headers do not match its
//     name is refused, as pghoard does.
//
// Out of the repository:
//
//   - Fetch serves one file to restore_command (`pgvault wal fetch %f %p`):
//     complete segments byte-exact, or, when only "<segment>.partial" is
//     stored, that partial zero-padded to the segment size, so that recovery
//     replays the last streamed WAL and then ends cleanly at the zero pages.
//     What it serves is verified first (VerifyFile), so a damaged file never
//     reaches PostgreSQL;
//   - a Spool is a private local folder of segments fetched ahead of
//     recovery by Prefetch (run by a detached `pgvault wal prefetch`), so
//     that the next restore_command finds its segment locally without the
//     repository password.
//
// Checks:
//
//   - CheckGaps lists the segments missing from the catalogue between a
//     start (the oldest base backup) and the newest stored WAL, following
//     the timeline history files stored with it;
//   - Preflight and ProbeReplication say whether a PostgreSQL server is set
//     up for WAL streaming (wal_level, WAL senders, slots, the role's
//     REPLICATION attribute, the slot's state, pg_hba.conf), each finding
//     with the fix.
//
// The segment size is never configured: it is read from the long page
// header (xlp_seg_size) of the segment being handled. Functions take ctx
// first and an Options struct last, keep no package state, and are safe for
// concurrent use unless their documentation says otherwise. Errors wrap the
// sentinels callers branch on: repo.ErrWALNotFound (the file is not
// archived), repo.ErrWALConflict (a different file is stored under a
// complete file's name), wal.ErrInvalidSegment, wal.ErrInvalidHistory and
// wal.ErrInvalidName (the bytes or the name are not what they claim).
//
// The package imports repo, chunk and internal/pg (with internal/pg/wal) of pgvault, never backup
// or fs: callers that know about base backups pass what they know (such as
// CheckOptions.Start) as parameters.
package stream

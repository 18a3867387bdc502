// Package wal holds the PostgreSQL write-ahead-log knowledge that the WAL
// streamer, backup and restore, the FUSE mount and PITR planning share:
//
//   - LSN and segment arithmetic on [pglogrepl.LSN] (SegmentStart,
//     NextSegment, SegmentNo) and segment file names (SegmentName,
//     ParseSegmentName, Segment), following XLogFileName and
//     XLogFromFileName in PostgreSQL's src/include/access/xlog_internal.h;
//   - classification of the file names found in pg_wal and in a WAL archive
//     (segment, ".partial" segment, "TTTTTTTT.history", backup history file)
//     with Classify, IsValidName and ParseFileName;
//   - timeline history files (ParseHistory, following readTimeLineHistory in
//     src/backend/access/transam/timeline.c) and the questions PITR asks of
//     them: which timeline holds an LSN (TimelineOf), which ranges of WAL
//     make up a timeline's past (Ancestors) and which segment files recovery
//     reads between two points (RequiredSegments, following
//     XLogFileReadAnyTLI);
//   - point-in-time recovery targets (Target, TargetAction, TimelineGoal)
//     and the pure rendering of a restored data directory's recovery
//     settings (RecoveryConfig, ApplyRecoveryConfig, QuoteConfString,
//     RestoreCommand), shared by restore and the FUSE mount;
//   - WAL page headers (XLogPageHeaderData, XLogLongPageHeaderData) and the
//     checks a segment must pass before it is archived and after it is
//     fetched (ParsePageHeader, ValidateSegment).
//
// The package is pure: it does no I/O, keeps no state, and every function is
// safe for concurrent use. It imports nothing of pgvault, so every layer may
// use it. There is one LSN type, [pglogrepl.LSN]; format and parse LSNs with
// its String method and [pglogrepl.ParseLSN].
//
// The WAL segment size (wal_segment_size, fixed by initdb --wal-segsize) is a
// parameter of every function that needs it: a power of two from 1 MiB to
// 1 GiB, DefaultSegmentSize (16 MiB) unless the cluster was created
// otherwise. The WAL page size is fixed at 8 KiB (PostgreSQL built with the
// default XLOG_BLCKSZ). Functions that return an error report an invalid
// segment size as an error; functions that cannot fail panic on one, as
// they would on a division by zero.
//
// PostgreSQL 13 and later are supported (PGVersionFromMagic knows 10 to 18);
// nothing here differs between 13 and 17.
package wal

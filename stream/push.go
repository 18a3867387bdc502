package stream

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/stream/wal"
)

// Verified describes a WAL file that passed VerifyFile.
type Verified struct {
	Name     string
	Kind     wal.FileKind
	Timeline uint32 // from the name: what repo.SaveWAL files it under
	// For segments and partial segments, from the first page's long
	// header: the segment size (wal_segment_size), the cluster's system
	// identifier and the PostgreSQL major version that wrote it (0 if the
	// magic is unknown).
	SegmentSize uint64
	SystemID    uint64
	PGVersion   int
	// History is the parsed content of a timeline history file.
	History []wal.HistoryEntry
}

// VerifyFile checks that data is the WAL file name says it is, before it is
// archived and after it is fetched:
//
//   - a segment ("000000010000000000000003") must pass wal.ValidateSegment
//     with the segment size its own long page header gives (xlp_seg_size):
//     the right size, page addresses that match the name, no stray headers
//     after the zeroed tail;
//   - a partial segment ("....partial") must start with a long header that
//     matches the name (only its first page is checked: what follows its
//     last written byte is whatever a recycled file held);
//   - a timeline history file ("00000002.history") must parse and name
//     only parent timelines older than its own;
//   - a backup history file ("....00000028.backup") is free text and is
//     not checked.
//
// Errors match wal.ErrInvalidName (a name PostgreSQL would not archive),
// wal.ErrInvalidSegment (segment bytes; a *wal.SegmentError says where) or
// wal.ErrInvalidHistory. VerifyFile is pure and safe for concurrent use.
func VerifyFile(name string, data []byte) (Verified, error) {
	kind := wal.Classify(name)
	v := Verified{Name: name, Kind: kind}
	if kind == wal.KindInvalid {
		return v, fmt.Errorf("%w %q: not a WAL segment, .partial segment, timeline history or backup history file name", wal.ErrInvalidName, name)
	}
	v.Timeline = timelineOf(name)
	switch kind {
	case wal.KindSegment, wal.KindPartial:
		segSize, err := segmentSizeOf(name, data)
		if err != nil {
			return v, err
		}
		hdr, err := wal.ValidateSegment(name, data, segSize)
		if err != nil {
			return v, err
		}
		v.SegmentSize, v.SystemID, v.PGVersion = segSize, hdr.SystemID, hdr.PGVersion()
	case wal.KindHistory:
		h, err := wal.ParseHistory(data)
		if err != nil {
			return v, fmt.Errorf("timeline history file %s: %w", name, err)
		}
		// Ancestors checks that every parent is older than the file's
		// own timeline, as PostgreSQL does when it reads the file.
		if _, err := wal.Ancestors(h, v.Timeline); err != nil {
			return v, fmt.Errorf("timeline history file %s: %w", name, err)
		}
		v.History = h
	case wal.KindBackupHistory:
		// Free text written by PostgreSQL; stored as it is.
	}
	return v, nil
}

// segmentSizeOf reads xlp_seg_size from the long header at the start of a
// segment, as a *wal.SegmentError when there is no usable header.
func segmentSizeOf(name string, data []byte) (uint64, error) {
	if len(data) < wal.LongPageHeaderSize {
		return 0, &wal.SegmentError{Name: name, Offset: -1,
			Err: fmt.Errorf("%d bytes, too short to hold the first page's header", len(data))}
	}
	hdr, err := wal.ParsePageHeader(data)
	if err != nil {
		return 0, &wal.SegmentError{Name: name, Offset: 0, Err: fmt.Errorf("first page: %w", err)}
	}
	if !hdr.Long() {
		return 0, &wal.SegmentError{Name: name, Offset: 0,
			Err: fmt.Errorf("first page has a short header (xlp_info %04X): a segment starts with a long header", hdr.Info)}
	}
	return uint64(hdr.SegSize), nil
}

// timelineOf is the timeline in the first eight hex digits of a name that
// wal.Classify accepted.
func timelineOf(name string) uint32 {
	tli, _ := strconv.ParseUint(name[:8], 16, 32)
	return uint32(tli)
}

// PushOptions tune Push.
type PushOptions struct {
	// OnConflict, when set, is called (before Push returns the error) when
	// the repository already holds different content under the name of a
	// complete WAL file: the alert hook. It must not block for long.
	OnConflict func(Conflict)
}

// Conflict describes a refused push: the repository already holds a
// different complete file under the name. This should never happen with
// one cluster per repository; it means two clusters archive into the same
// repository, or a cluster forked without a new timeline (a restored copy
// started without recovery), and needs a human.
type Conflict struct {
	Name     string
	Timeline uint32
	Size     int64         // of the refused file
	Stored   *repo.WALFile // the entry already in the repository
}

// PushResult says what Push did.
type PushResult struct {
	Name     string `json:"name"`
	Kind     string `json:"kind"`
	Timeline uint32 `json:"timeline"`
	Size     int64  `json:"size"`
	Partial  bool   `json:"partial"`
	// AlreadyStored is set when the same content was already archived
	// under the name (a retried archive_command); nothing was written.
	AlreadyStored bool   `json:"already_stored"`
	SegmentSize   uint64 `json:"segment_size,omitempty"`
	SystemID      string `json:"system_identifier,omitempty"`
}

// Push verifies data as the WAL file name (VerifyFile) and stores it in the
// repository's WAL catalogue under the timeline of its name: segments,
// history and backup history files as complete files, "<segment>.partial"
// (archived by PostgreSQL at promotion) as a partial one. Nothing is stored
// when verification fails.
//
// Pushing identical content again succeeds (AlreadyStored). Different
// content under a complete file's name is refused with an error matching
// repo.ErrWALConflict, after OnConflict is called. A partial entry may be
// replaced. Push takes no lock: callers that must exclude prune hold a
// shared lock around it. When Push returns nil the file is durable.
func Push(ctx context.Context, r *repo.Repository, name string, data []byte, opts PushOptions) (*PushResult, error) {
	v, err := VerifyFile(name, data)
	if err != nil {
		return nil, err
	}
	partial := v.Kind == wal.KindPartial
	res := &PushResult{Name: name, Kind: v.Kind.String(), Timeline: v.Timeline, Size: int64(len(data)),
		Partial: partial, SegmentSize: v.SegmentSize}
	if v.SystemID != 0 {
		res.SystemID = strconv.FormatUint(v.SystemID, 10)
	}
	// Look first: a retried archive_command finds its file stored, and a
	// conflict can name what is stored. SaveWAL decides either way.
	old, err := r.LoadWALFile(ctx, v.Timeline, name)
	if err != nil && !errors.Is(err, repo.ErrWALNotFound) {
		return nil, fmt.Errorf("archive %s: %w", name, err)
	}
	if err != nil {
		old = nil
	}
	_, err = r.SaveWAL(ctx, v.Timeline, name, data, partial)
	if errors.Is(err, repo.ErrWALConflict) {
		if old == nil {
			old, _ = r.LoadWALFile(ctx, v.Timeline, name)
		}
		c := Conflict{Name: name, Timeline: v.Timeline, Size: int64(len(data)), Stored: old}
		if opts.OnConflict != nil {
			opts.OnConflict(c)
		}
		return nil, &ConflictError{Conflict: c}
	}
	if err != nil {
		return nil, fmt.Errorf("archive %s: %w", name, err)
	}
	res.AlreadyStored = !partial && old != nil && !old.Partial
	return res, nil
}

// ConflictError is Push's error for a conflict; it matches
// repo.ErrWALConflict.
type ConflictError struct{ Conflict Conflict }

func (e *ConflictError) Error() string {
	stored := ""
	if s := e.Conflict.Stored; s != nil {
		stored = fmt.Sprintf(" (%d bytes, stored %s)", s.Size, s.Created.Format("2006-01-02 15:04:05 UTC"))
	}
	return fmt.Sprintf("WAL file %s (timeline %d): the repository already holds different content under that name%s",
		e.Conflict.Name, e.Conflict.Timeline, stored)
}

func (e *ConflictError) Unwrap() error { return repo.ErrWALConflict }

// PushFile reads the file at path and pushes it under its base name (the
// %p of archive_command is a path relative to the data directory; its base
// name is %f).
func PushFile(ctx context.Context, r *repo.Repository, path string, opts PushOptions) (*PushResult, error) {
	name := filepath.Base(path)
	if wal.Classify(name) == wal.KindInvalid {
		return nil, fmt.Errorf("%w %q: not a WAL segment, .partial segment, timeline history or backup history file name", wal.ErrInvalidName, name)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read WAL file: %w", err)
	}
	return Push(ctx, r, name, data, opts)
}

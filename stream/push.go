package stream

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

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
	v, err := wal.VerifyFile(name, data)
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

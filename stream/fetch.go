package stream

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend"
)

// Where a fetched file came from (FetchResult.Source).
const (
	SourceRepository = "repository"
	SourceSpool      = "spool"
)

// FetchResult says what Fetch served.
type FetchResult struct {
	Name     string `json:"name"`
	Kind     string `json:"kind"`
	Timeline uint32 `json:"timeline"`
	// Size is the number of bytes served; StoredSize what the repository
	// holds (smaller when a partial segment was padded).
	Size       int64 `json:"size"`
	StoredSize int64 `json:"stored_size"`
	// FromPartial is set when the segment was not archived complete and
	// "<name>.partial" was served instead, zero-padded to SegmentSize.
	FromPartial bool   `json:"from_partial"`
	SegmentSize uint64 `json:"segment_size,omitempty"`
	Source      string `json:"source"`
}

// Fetch returns the WAL file name from the repository, as restore_command
// must hand it to PostgreSQL, after checking it with VerifyFile:
//
//   - a complete segment, a history file or a backup history file exactly
//     as archived;
//   - for a segment that is only stored as "<name>.partial" (the segment
//     the streamer was writing), that partial zero-padded to the segment
//     size: PostgreSQL refuses a short segment, while zero pages end
//     replay cleanly at the last streamed record;
//   - any stored name, ".partial" ones included, byte-exact when asked for
//     by that name.
//
// A file the repository does not hold is an error matching
// repo.ErrWALNotFound: the normal end of archive recovery. A file that
// fails verification is an error matching wal.ErrInvalidSegment or
// wal.ErrInvalidHistory and is not returned.
func Fetch(ctx context.Context, r *repo.Repository, name string) ([]byte, *FetchResult, error) {
	sources, err := wal.Sources(name)
	if err != nil {
		return nil, nil, err
	}
	for _, src := range sources {
		stored, _, err := r.LoadWAL(ctx, src.Timeline, src.Stored)
		if errors.Is(err, repo.ErrWALNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("fetch %s: %w", src.Stored, err)
		}
		data, v, err := wal.Serve(src, stored)
		if err != nil {
			return nil, nil, fmt.Errorf("the repository's copy is damaged, not served: %w", err)
		}
		return data, &FetchResult{Name: name, Kind: wal.Classify(name).String(), Timeline: src.Timeline,
			Size: int64(len(data)), StoredSize: int64(len(stored)), FromPartial: src.Partial,
			SegmentSize: v.SegmentSize, Source: SourceRepository}, nil
	}
	return nil, nil, fmt.Errorf("WAL file %s: %w", name, repo.ErrWALNotFound)
}

// Archived reports whether the repository on be holds what Fetch would
// serve for name: the file itself or, for a segment, "<name>.partial". It
// looks only at object names (wal/<timeline>/<name>, see
// docs/reference/repo-format.md), so it needs no key: restore_command
// answers "not archived" (the end of archive recovery, PostgreSQL's probes
// for newer timelines) without a key derivation. A true answer still needs
// Fetch, which verifies the content.
func Archived(ctx context.Context, be backend.Backend, name string) (bool, error) {
	kind := wal.Classify(name)
	if kind == wal.KindInvalid {
		return false, fmt.Errorf("%w %q", wal.ErrInvalidName, name)
	}
	names := []string{name}
	if kind == wal.KindSegment {
		names = append(names, name+".partial")
	}
	for _, n := range names {
		h := backend.Handle{Type: backend.WALFile, Name: fmt.Sprintf("%08X/%s", wal.NameTimeline(n), n)}
		_, err := be.Stat(ctx, h)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, backend.ErrNotFound) {
			return false, fmt.Errorf("look for WAL file %s: %w", n, err)
		}
	}
	return false, nil
}

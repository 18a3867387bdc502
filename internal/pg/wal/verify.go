package wal

import (
	"fmt"
	"strconv"
)

// Verified describes a WAL file that passed VerifyFile.
type Verified struct {
	Name     string
	Kind     FileKind
	Timeline uint32 // from the name: what repo.SaveWAL files it under
	// For segments and partial segments, from the first page's long
	// header: the segment size (wal_segment_size), the cluster's system
	// identifier and the PostgreSQL major version that wrote it (0 if the
	// magic is unknown).
	SegmentSize uint64
	SystemID    uint64
	PGVersion   int
	// History is the parsed content of a timeline history file.
	History []HistoryEntry
}

// VerifyFile checks that data is the WAL file name says it is, before it is
// archived and after it is fetched:
//
//   - a segment ("000000010000000000000003") must pass ValidateSegment
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
// Errors match ErrInvalidName (a name PostgreSQL would not archive),
// ErrInvalidSegment (segment bytes; a *SegmentError says where) or
// ErrInvalidHistory. VerifyFile is pure and safe for concurrent use.
func VerifyFile(name string, data []byte) (Verified, error) {
	kind := Classify(name)
	v := Verified{Name: name, Kind: kind}
	if kind == KindInvalid {
		return v, fmt.Errorf("%w %q: not a WAL segment, .partial segment, timeline history or backup history file name", ErrInvalidName, name)
	}
	v.Timeline = NameTimeline(name)
	switch kind {
	case KindSegment, KindPartial:
		segSize, err := SegmentSizeOf(name, data)
		if err != nil {
			return v, err
		}
		hdr, err := ValidateSegment(name, data, segSize)
		if err != nil {
			return v, err
		}
		v.SegmentSize, v.SystemID, v.PGVersion = segSize, hdr.SystemID, hdr.PGVersion()
	case KindHistory:
		h, err := ParseHistory(data)
		if err != nil {
			return v, fmt.Errorf("timeline history file %s: %w", name, err)
		}
		// Ancestors checks that every parent is older than the file's
		// own timeline, as PostgreSQL does when it reads the file.
		if _, err := Ancestors(h, v.Timeline); err != nil {
			return v, fmt.Errorf("timeline history file %s: %w", name, err)
		}
		v.History = h
	case KindBackupHistory:
		// Free text written by PostgreSQL; stored as it is.
	}
	return v, nil
}

// SegmentSizeOf reads xlp_seg_size from the long header at the start of a
// segment, as a *SegmentError when there is no usable header.
func SegmentSizeOf(name string, data []byte) (uint64, error) {
	if len(data) < LongPageHeaderSize {
		return 0, &SegmentError{Name: name, Offset: -1,
			Err: fmt.Errorf("%d bytes, too short to hold the first page's header", len(data))}
	}
	hdr, err := ParsePageHeader(data)
	if err != nil {
		return 0, &SegmentError{Name: name, Offset: 0, Err: fmt.Errorf("first page: %w", err)}
	}
	if !hdr.Long() {
		return 0, &SegmentError{Name: name, Offset: 0,
			Err: fmt.Errorf("first page has a short header (xlp_info %04X): a segment starts with a long header", hdr.Info)}
	}
	return uint64(hdr.SegSize), nil
}

// NameTimeline is the timeline in the first eight hex digits of a name that
// Classify accepted.
func NameTimeline(name string) uint32 {
	tli, _ := strconv.ParseUint(name[:8], 16, 32)
	return uint32(tli)
}

// Source is a stored WAL file that can serve a request.
type Source struct {
	Timeline uint32
	// Stored is the catalogue name that holds the content.
	Stored string
	// Partial: a segment stored only as the streamer's ".partial", served
	// zero-padded to a whole segment (PostgreSQL refuses a short segment,
	// while zero pages end replay cleanly at the last streamed record).
	Partial bool
}

// Sources lists, in order, the stored files that may serve a request for
// name (what restore_command asks for): the file itself, and for a
// complete segment then its ".partial". This, with Serve, is the one
// policy for what recovery is handed; `wal fetch` and the mount's WAL view
// both follow it. A name that is not a WAL file name is an error matching
// ErrInvalidName.
func Sources(name string) ([]Source, error) {
	kind := Classify(name)
	if kind == KindInvalid {
		return nil, fmt.Errorf("%w %q: not a WAL segment, .partial segment, timeline history or backup history file name", ErrInvalidName, name)
	}
	tli := NameTimeline(name)
	out := []Source{{Timeline: tli, Stored: name}}
	if kind == KindSegment {
		out = append(out, Source{Timeline: tli, Stored: name + ".partial", Partial: true})
	}
	return out, nil
}

// Serve checks stored, the content of src.Stored, with VerifyFile and
// returns the bytes to hand PostgreSQL: as stored, or zero-padded to the
// segment size for a partial source. Bytes that fail verification are an
// error (ErrInvalidSegment, ErrInvalidHistory) and are never returned.
func Serve(src Source, stored []byte) ([]byte, Verified, error) {
	v, err := VerifyFile(src.Stored, stored)
	if err != nil {
		return nil, v, err
	}
	if src.Partial && uint64(len(stored)) < v.SegmentSize {
		padded := make([]byte, v.SegmentSize)
		copy(padded, stored)
		return padded, v, nil
	}
	return stored, v, nil
}

package wal

import (
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
)

// Segment sizes (wal_segment_size). PostgreSQL accepts any power of two from
// MinSegmentSize to MaxSegmentSize (IsValidWalSegSize).
const (
	DefaultSegmentSize uint64 = 16 << 20
	MinSegmentSize     uint64 = 1 << 20
	MaxSegmentSize     uint64 = 1 << 30
)

// ErrInvalidName is wrapped by every error about a WAL file name that is not
// one PostgreSQL would produce.
var ErrInvalidName = errors.New("invalid WAL file name")

// ValidSegmentSize reports whether segSize is a possible wal_segment_size.
func ValidSegmentSize(segSize uint64) bool {
	return segSize >= MinSegmentSize && segSize <= MaxSegmentSize && segSize&(segSize-1) == 0
}

func checkSegmentSize(segSize uint64) error {
	if !ValidSegmentSize(segSize) {
		return fmt.Errorf("invalid WAL segment size %d: must be a power of two from 1 MiB to 1 GiB", segSize)
	}
	return nil
}

func mustSegmentSize(segSize uint64) {
	if err := checkSegmentSize(segSize); err != nil {
		panic("wal: " + err.Error())
	}
}

// SegmentsPerXLogID is the number of segments per "xlogid", the middle eight
// hex digits of a segment name (XLogSegmentsPerXLogId): 0x100000000/segSize,
// 256 for 16 MiB segments.
func SegmentsPerXLogID(segSize uint64) uint64 {
	mustSegmentSize(segSize)
	return 0x100000000 / segSize
}

// SegmentNo is the number of the segment that holds lsn (XLByteToSeg).
func SegmentNo(lsn pglogrepl.LSN, segSize uint64) uint64 {
	mustSegmentSize(segSize)
	return uint64(lsn) / segSize
}

// EndSegmentNo is the number of the segment that holds the byte just before
// lsn (XLByteToPrevSeg): the last segment needed to read WAL that ends at
// lsn, such as a backup's stop LSN. EndSegmentNo(0) is 0.
func EndSegmentNo(lsn pglogrepl.LSN, segSize uint64) uint64 {
	mustSegmentSize(segSize)
	if lsn == 0 {
		return 0
	}
	return uint64(lsn-1) / segSize
}

// SegmentOffset is lsn's byte offset inside its segment (XLogSegmentOffset).
func SegmentOffset(lsn pglogrepl.LSN, segSize uint64) uint64 {
	mustSegmentSize(segSize)
	return uint64(lsn) & (segSize - 1)
}

// SegmentStart is the LSN of the first byte of the segment that holds lsn.
func SegmentStart(lsn pglogrepl.LSN, segSize uint64) pglogrepl.LSN {
	mustSegmentSize(segSize)
	return lsn &^ pglogrepl.LSN(segSize-1)
}

// NextSegment is the LSN of the first byte of the segment after the one that
// holds lsn. It wraps to 0 after the last possible segment.
func NextSegment(lsn pglogrepl.LSN, segSize uint64) pglogrepl.LSN {
	return SegmentStart(lsn, segSize) + pglogrepl.LSN(segSize)
}

// Segment names one WAL segment file: a timeline and a segment number
// (XLogSegNo, the LSN divided by the segment size). The zero value is not a
// valid segment: timelines start at 1.
type Segment struct {
	Timeline uint32
	No       uint64
}

// SegmentOf is the segment on timeline tli that holds lsn.
func SegmentOf(tli uint32, lsn pglogrepl.LSN, segSize uint64) Segment {
	return Segment{Timeline: tli, No: SegmentNo(lsn, segSize)}
}

// Name is the segment's file name (XLogFileName): 24 upper-case hex digits,
// timeline, xlogid and segment within the xlogid, e.g.
// "000000010000000000000003".
func (s Segment) Name(segSize uint64) string {
	per := SegmentsPerXLogID(segSize)
	return fmt.Sprintf("%08X%08X%08X", s.Timeline, uint32(s.No/per), uint32(s.No%per))
}

// Start is the LSN of the segment's first byte.
func (s Segment) Start(segSize uint64) pglogrepl.LSN {
	mustSegmentSize(segSize)
	return pglogrepl.LSN(s.No * segSize)
}

// Next is the following segment on the same timeline.
func (s Segment) Next() Segment { return Segment{Timeline: s.Timeline, No: s.No + 1} }

// PartialName is the name of the segment with the ".partial" suffix that
// PostgreSQL (at the end of archive recovery) and pg_receivewal give a
// segment that may be incomplete.
func (s Segment) PartialName(segSize uint64) string { return s.Name(segSize) + ".partial" }

// SegmentName is the file name of the segment on timeline tli that holds
// lsn, e.g. SegmentName(1, 0/3000028, 16 MiB) = "000000010000000000000003".
func SegmentName(tli uint32, lsn pglogrepl.LSN, segSize uint64) string {
	return SegmentOf(tli, lsn, segSize).Name(segSize)
}

// ParseSegmentName parses a segment file name (24 upper-case hex digits, no
// suffix) into its timeline and the LSN of its first byte. Unlike
// PostgreSQL's XLogFromFileName it rejects timeline 0 and a segment part
// that is out of range for segSize (e.g. "...00000100" for 16 MiB).
func ParseSegmentName(name string, segSize uint64) (tli uint32, start pglogrepl.LSN, err error) {
	s, err := ParseSegment(name, segSize)
	if err != nil {
		return 0, 0, err
	}
	return s.Timeline, s.Start(segSize), nil
}

// ParseSegment is ParseSegmentName returning a Segment.
func ParseSegment(name string, segSize uint64) (Segment, error) {
	if err := checkSegmentSize(segSize); err != nil {
		return Segment{}, err
	}
	if Classify(name) != KindSegment {
		return Segment{}, fmt.Errorf("%w %q: a WAL segment name is 24 upper-case hex digits (timeline 1 or more)", ErrInvalidName, name)
	}
	return parseSegmentPart(name, name[:24], segSize)
}

// parseSegmentPart parses the 24 hex digits of a name already known to be
// upper-case hex with a non-zero timeline.
func parseSegmentPart(name, hex24 string, segSize uint64) (Segment, error) {
	tli, _ := parseHex32(hex24[0:8])
	log, _ := parseHex32(hex24[8:16])
	seg, _ := parseHex32(hex24[16:24])
	per := 0x100000000 / segSize
	if uint64(seg) >= per {
		return Segment{}, fmt.Errorf("%w %q: segment part %08X is out of range for %s segments (at most %08X)",
			ErrInvalidName, name, seg, formatSize(segSize), per-1)
	}
	return Segment{Timeline: tli, No: uint64(log)*per + uint64(seg)}, nil
}

// HistoryFileName is the name of timeline tli's history file
// (TLHistoryFileName), e.g. "00000002.history".
func HistoryFileName(tli uint32) string { return fmt.Sprintf("%08X.history", tli) }

// BackupHistoryName is the name of the backup history file PostgreSQL
// archives when a base backup that started at lsn on timeline tli ends
// (BackupHistoryFileName), e.g. "000000010000000000000002.00000028.backup".
func BackupHistoryName(tli uint32, lsn pglogrepl.LSN, segSize uint64) string {
	return fmt.Sprintf("%s.%08X.backup", SegmentName(tli, lsn, segSize), uint32(SegmentOffset(lsn, segSize)))
}

// FileKind is what a file name in pg_wal or in a WAL archive denotes.
type FileKind int

// The kinds of WAL file names. KindInvalid is anything PostgreSQL would not
// name a WAL archive file.
const (
	KindInvalid       FileKind = iota
	KindSegment                // "000000010000000000000003"
	KindPartial                // "000000010000000000000003.partial"
	KindHistory                // "00000002.history"
	KindBackupHistory          // "000000010000000000000003.00000028.backup"
)

func (k FileKind) String() string {
	switch k {
	case KindSegment:
		return "segment"
	case KindPartial:
		return "partial segment"
	case KindHistory:
		return "timeline history"
	case KindBackupHistory:
		return "backup history"
	default:
		return "invalid"
	}
}

// Classify says what kind of WAL file name is, from its syntax alone
// (PostgreSQL's IsXLogFileName, IsPartialXLogFileName, IsTLHistoryFileName,
// and a stricter IsBackupHistoryFileName): hex digits must be upper-case and
// the timeline must not be 0. Whether the segment part is in range depends on
// the segment size; ParseFileName checks that too.
func Classify(name string) FileKind {
	switch {
	case len(name) == 24 && isUpperHex(name):
		return validTLI(name, KindSegment)
	case len(name) == 32 && isUpperHex(name[:24]) && name[24:] == ".partial":
		return validTLI(name, KindPartial)
	case len(name) == 16 && isUpperHex(name[:8]) && name[8:] == ".history":
		return validTLI(name, KindHistory)
	case len(name) == 40 && isUpperHex(name[:24]) && name[24] == '.' &&
		isUpperHex(name[25:33]) && name[33:] == ".backup":
		return validTLI(name, KindBackupHistory)
	}
	return KindInvalid
}

func validTLI(name string, k FileKind) FileKind {
	if name[:8] == "00000000" {
		return KindInvalid
	}
	return k
}

// IsValidName reports whether name is a WAL archive file name of any kind.
func IsValidName(name string) bool { return Classify(name) != KindInvalid }

// FileName is a parsed WAL archive file name.
type FileName struct {
	Kind     FileKind
	Timeline uint32
	// SegNo is the segment number for KindSegment, KindPartial and
	// KindBackupHistory (the segment the backup started in).
	SegNo uint64
	// Offset is, for KindBackupHistory, the byte offset of the backup's
	// start LSN inside segment SegNo.
	Offset uint32
}

// Segment is the segment a segment, partial or backup history name refers to.
func (f FileName) Segment() Segment { return Segment{Timeline: f.Timeline, No: f.SegNo} }

// BackupStart is, for KindBackupHistory, the backup's start LSN.
func (f FileName) BackupStart(segSize uint64) pglogrepl.LSN {
	return f.Segment().Start(segSize) + pglogrepl.LSN(f.Offset)
}

// ParseFileName parses any WAL archive file name, checking the segment part
// and backup offset against segSize.
func ParseFileName(name string, segSize uint64) (FileName, error) {
	if err := checkSegmentSize(segSize); err != nil {
		return FileName{}, err
	}
	k := Classify(name)
	f := FileName{Kind: k}
	switch k {
	case KindInvalid:
		return FileName{}, fmt.Errorf("%w %q: want a segment (24 upper-case hex digits), a .partial segment, TTTTTTTT.history or a .backup file", ErrInvalidName, name)
	case KindHistory:
		f.Timeline, _ = parseHex32(name[:8])
		return f, nil
	}
	s, err := parseSegmentPart(name, name[:24], segSize)
	if err != nil {
		return FileName{}, err
	}
	f.Timeline, f.SegNo = s.Timeline, s.No
	if k == KindBackupHistory {
		f.Offset, _ = parseHex32(name[25:33])
		if uint64(f.Offset) >= segSize {
			return FileName{}, fmt.Errorf("%w %q: backup offset %08X is beyond a %s segment", ErrInvalidName, name, f.Offset, formatSize(segSize))
		}
	}
	return f, nil
}

func isUpperHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'A' || c > 'F') {
			return false
		}
	}
	return true
}

// parseHex32 parses exactly eight upper-case hex digits.
func parseHex32(s string) (uint32, bool) {
	if len(s) != 8 {
		return 0, false
	}
	var v uint32
	for i := 0; i < 8; i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | uint32(c-'0')
		case c >= 'A' && c <= 'F':
			v = v<<4 | uint32(c-'A'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

func formatSize(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

package wal

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
)

// WAL page layout (src/include/access/xlog_internal.h).
const (
	// PageSize is XLOG_BLCKSZ, the size of a WAL page. PostgreSQL built
	// with another --with-wal-blocksize is not supported.
	PageSize = 8192
	// ShortPageHeaderSize is SizeOfXLogShortPHD: MAXALIGN of
	// XLogPageHeaderData's 20 bytes.
	ShortPageHeaderSize = 24
	// LongPageHeaderSize is SizeOfXLogLongPHD, the header of a segment's
	// first page.
	LongPageHeaderSize = 40
)

// xlp_info flag bits. XLPBkpRemovable is set while no base backup runs;
// XLPFirstIsOverwriteContRecord exists since 14.0, 13.5 and the other
// November 2021 minor releases.
const (
	XLPFirstIsContRecord          uint16 = 0x0001
	XLPLongHeader                 uint16 = 0x0002
	XLPBkpRemovable               uint16 = 0x0004
	XLPFirstIsOverwriteContRecord uint16 = 0x0008
	XLPAllFlags                   uint16 = 0x000F
)

// XLOG_PAGE_MAGIC of each major version: it changes whenever the WAL format
// does, so it identifies the version that wrote a segment.
var pageMagics = [...]struct {
	magic   uint16
	version int
}{
	{0xD097, 10},
	{0xD098, 11},
	{0xD101, 12},
	{0xD106, 13},
	{0xD10D, 14},
	{0xD110, 15},
	{0xD113, 16},
	{0xD116, 17},
	{0xD118, 18},
}

// PGVersionFromMagic maps a WAL page magic (xlp_magic) to the PostgreSQL
// major version that writes it, e.g. 0xD110 to 15.
func PGVersionFromMagic(magic uint16) (int, bool) {
	for _, m := range pageMagics {
		if m.magic == magic {
			return m.version, true
		}
	}
	return 0, false
}

// ErrInvalidPage is wrapped by every error of ParsePageHeader.
var ErrInvalidPage = errors.New("invalid WAL page header")

// PageHeader is a WAL page header: XLogPageHeaderData and, when Info has
// XLPLongHeader (the first page of a segment), XLogLongPageHeaderData.
type PageHeader struct {
	Magic    uint16        // xlp_magic: the PostgreSQL version, see PGVersionFromMagic
	Info     uint16        // xlp_info: XLP* flag bits
	Timeline uint32        // xlp_tli: timeline of the first record on the page
	PageAddr pglogrepl.LSN // xlp_pageaddr: LSN of the page's first byte
	RemLen   uint32        // xlp_rem_len: bytes of a record continued from the previous page

	// Long header only.
	SystemID  uint64 // xlp_sysid: the cluster's system identifier (pg_control)
	SegSize   uint32 // xlp_seg_size: wal_segment_size
	BlockSize uint32 // xlp_xlog_blcksz: XLOG_BLCKSZ

	// BigEndian is set when the WAL was written by a big-endian server:
	// PostgreSQL writes headers in the host's byte order.
	BigEndian bool
}

// Long reports whether the header is a long one.
func (h PageHeader) Long() bool { return h.Info&XLPLongHeader != 0 }

// Size is the header's size on the page: LongPageHeaderSize or
// ShortPageHeaderSize.
func (h PageHeader) Size() int {
	if h.Long() {
		return LongPageHeaderSize
	}
	return ShortPageHeaderSize
}

// PGVersion is the major version that wrote the page, 0 if unknown.
func (h PageHeader) PGVersion() int {
	v, _ := PGVersionFromMagic(h.Magic)
	return v
}

type byteOrder interface {
	binary.ByteOrder
	binary.AppendByteOrder
}

func (h PageHeader) order() byteOrder {
	if h.BigEndian {
		return binary.BigEndian
	}
	return binary.LittleEndian
}

// AppendBinary appends the header as PostgreSQL lays it out (Size() bytes,
// padding zeroed), in the byte order BigEndian says. It never fails; it
// implements encoding.BinaryAppender.
func (h PageHeader) AppendBinary(b []byte) ([]byte, error) {
	o := h.order()
	b = o.AppendUint16(b, h.Magic)
	b = o.AppendUint16(b, h.Info)
	b = o.AppendUint32(b, h.Timeline)
	b = o.AppendUint64(b, uint64(h.PageAddr))
	b = o.AppendUint32(b, h.RemLen)
	b = append(b, 0, 0, 0, 0)
	if h.Long() {
		b = o.AppendUint64(b, h.SystemID)
		b = o.AppendUint32(b, h.SegSize)
		b = o.AppendUint32(b, h.BlockSize)
	}
	return b, nil
}

// ParsePageHeader decodes the page header at the start of page, short or
// long as its xlp_info says, and checks what can be checked without knowing
// where the page belongs, as XLogReaderValidatePageHeader does: a known
// magic, no undefined xlp_info bits, a timeline of 1 or more, a page address
// on a page boundary (and, for a long header, on a segment boundary), and for
// a long header a valid segment size and an 8 KiB page size. The byte order
// is taken from the magic, so WAL from a big-endian server parses too.
func ParsePageHeader(page []byte) (PageHeader, error) {
	if len(page) < ShortPageHeaderSize {
		return PageHeader{}, fmt.Errorf("%w: %d bytes, a page header needs %d", ErrInvalidPage, len(page), ShortPageHeaderSize)
	}
	var h PageHeader
	var o binary.ByteOrder = binary.LittleEndian
	if _, ok := PGVersionFromMagic(o.Uint16(page)); !ok {
		if _, ok := PGVersionFromMagic(binary.BigEndian.Uint16(page)); ok {
			o, h.BigEndian = binary.BigEndian, true
		} else if isZero(page[:ShortPageHeaderSize]) {
			return PageHeader{}, fmt.Errorf("%w: the header is all zeros (no WAL was written to this page)", ErrInvalidPage)
		} else {
			return PageHeader{}, fmt.Errorf("%w: unknown magic 0x%04X: not written by PostgreSQL 10 to 18", ErrInvalidPage, o.Uint16(page))
		}
	}
	h.Magic = o.Uint16(page[0:])
	h.Info = o.Uint16(page[2:])
	h.Timeline = o.Uint32(page[4:])
	h.PageAddr = pglogrepl.LSN(o.Uint64(page[8:]))
	h.RemLen = o.Uint32(page[16:])
	if h.Info&^XLPAllFlags != 0 {
		return PageHeader{}, fmt.Errorf("%w: invalid info bits %04X", ErrInvalidPage, h.Info)
	}
	if h.Timeline == 0 {
		return PageHeader{}, fmt.Errorf("%w: timeline 0", ErrInvalidPage)
	}
	if h.PageAddr%PageSize != 0 {
		return PageHeader{}, fmt.Errorf("%w: page address %s is not on an 8 KiB page boundary", ErrInvalidPage, h.PageAddr)
	}
	if !h.Long() {
		return h, nil
	}
	if len(page) < LongPageHeaderSize {
		return PageHeader{}, fmt.Errorf("%w: %d bytes, a long page header needs %d", ErrInvalidPage, len(page), LongPageHeaderSize)
	}
	h.SystemID = o.Uint64(page[24:])
	h.SegSize = o.Uint32(page[32:])
	h.BlockSize = o.Uint32(page[36:])
	if !ValidSegmentSize(uint64(h.SegSize)) {
		return PageHeader{}, fmt.Errorf("%w: segment size %d in the long header is not a power of two from 1 MiB to 1 GiB", ErrInvalidPage, h.SegSize)
	}
	if h.BlockSize != PageSize {
		return PageHeader{}, fmt.Errorf("%w: WAL page size %d in the long header, want %d (XLOG_BLCKSZ)", ErrInvalidPage, h.BlockSize, PageSize)
	}
	if uint64(h.PageAddr)%uint64(h.SegSize) != 0 {
		return PageHeader{}, fmt.Errorf("%w: long header at page address %s, which does not start a %s segment", ErrInvalidPage, h.PageAddr, formatSize(uint64(h.SegSize)))
	}
	return h, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ErrInvalidSegment is matched (errors.Is) by every error of ValidateSegment.
var ErrInvalidSegment = errors.New("invalid WAL segment")

// SegmentError is the error of ValidateSegment: which file, where, and why.
type SegmentError struct {
	Name   string // the file name as given
	Offset int64  // byte offset of the page at fault, -1 when no page is
	Err    error  // what is wrong; may wrap ErrInvalidName or ErrInvalidPage
}

func (e *SegmentError) Error() string {
	if e.Offset > 0 {
		return fmt.Sprintf("WAL file %s: page %d (offset %d): %v", e.Name, e.Offset/PageSize, e.Offset, e.Err)
	}
	return fmt.Sprintf("WAL file %s: %v", e.Name, e.Err)
}

func (e *SegmentError) Unwrap() error { return e.Err }

// Is makes every SegmentError match ErrInvalidSegment.
func (e *SegmentError) Is(target error) bool { return target == ErrInvalidSegment }

// ValidateSegment checks that data is the WAL segment file name says it is,
// before it is archived and after it is fetched, and returns the header of
// its first page. name is the file's base name: a segment or a ".partial"
// segment.
//
// A segment must be exactly segSize bytes. Its first page must hold a long
// header (see ParsePageHeader) whose page address is the segment's start LSN,
// whose segment size is segSize, and whose timeline is the name's or an
// older one: after a timeline switch in mid-segment, the child's copy of the
// segment keeps the parent's first page, so xlp_tli is the parent's (the
// returned header reports it). Every later page must carry a short header
// with the same magic, its own page address, a timeline that does not
// decrease and does not exceed the name's; or, from some page to the end of
// the file, an all-zero header: PostgreSQL 13 and later zero the rest of a
// segment after a WAL switch (pg_switch_wal, archive_timeout).
//
// A partial segment may be shorter than segSize (but holds at least the long
// header); only its first page is checked, because what follows the last
// written byte is whatever the recycled file held before.
//
// The system identifier is not checked: compare the returned SystemID with
// the cluster's. Failures are *SegmentError values, which match
// ErrInvalidSegment.
func ValidateSegment(name string, data []byte, segSize uint64) (PageHeader, error) {
	fail := func(off int64, format string, args ...any) (PageHeader, error) {
		return PageHeader{}, &SegmentError{Name: name, Offset: off, Err: fmt.Errorf(format, args...)}
	}
	if err := checkSegmentSize(segSize); err != nil {
		return fail(-1, "%w", err)
	}
	var seg Segment
	var partial bool
	switch Classify(name) {
	case KindSegment:
		s, err := parseSegmentPart(name, name, segSize)
		if err != nil {
			return fail(-1, "%w", err)
		}
		seg = s
	case KindPartial:
		s, err := parseSegmentPart(name, name[:24], segSize)
		if err != nil {
			return fail(-1, "%w", err)
		}
		seg, partial = s, true
	default:
		return fail(-1, "%w %q: not a WAL segment name (24 upper-case hex digits, optionally .partial)", ErrInvalidName, name)
	}
	start := seg.Start(segSize)

	switch n := uint64(len(data)); {
	case !partial && n != segSize:
		return fail(-1, "%d bytes, a complete segment is %d (%s)", n, segSize, formatSize(segSize))
	case partial && n > segSize:
		return fail(-1, "%d bytes, more than a %s segment", n, formatSize(segSize))
	case partial && n < LongPageHeaderSize:
		return fail(-1, "%d bytes, too short to hold the first page's header", n)
	}

	first, err := ParsePageHeader(data)
	if err != nil {
		return fail(0, "first page: %w", err)
	}
	if !first.Long() {
		return fail(0, "first page has a short header (xlp_info %04X): a segment starts with a long header", first.Info)
	}
	if uint64(first.SegSize) != segSize {
		return fail(0, "written with a WAL segment size of %s, expected %s", formatSize(uint64(first.SegSize)), formatSize(segSize))
	}
	if first.PageAddr != start {
		return fail(0, "page address %s does not match the segment start %s", first.PageAddr, start)
	}
	if first.Timeline > seg.Timeline {
		return fail(0, "first page is on timeline %d, later than the file name's %d", first.Timeline, seg.Timeline)
	}
	if partial {
		return first, nil
	}

	tli := first.Timeline
	zeroFrom := int64(-1)
	for off := int64(PageSize); off < int64(len(data)); off += PageSize {
		page := data[off : off+PageSize]
		hdr := page[:ShortPageHeaderSize]
		if zeroFrom >= 0 {
			if !isZero(hdr) {
				return fail(off, "holds a page header after the zeroed pages from offset %d", zeroFrom)
			}
			continue
		}
		if isZero(hdr) {
			zeroFrom = off
			continue
		}
		h, err := ParsePageHeader(page)
		if err != nil {
			return fail(off, "%w", err)
		}
		want := start + pglogrepl.LSN(off)
		switch {
		case h.Magic != first.Magic || h.BigEndian != first.BigEndian:
			return fail(off, "magic %04X differs from the first page's %04X", h.Magic, first.Magic)
		case h.Long():
			return fail(off, "long header inside a segment")
		case h.PageAddr != want:
			return fail(off, "page address %s, expected %s", h.PageAddr, want)
		case h.Timeline < tli:
			return fail(off, "out-of-sequence timeline %d (after %d)", h.Timeline, tli)
		case h.Timeline > seg.Timeline:
			return fail(off, "timeline %d, later than the file name's %d", h.Timeline, seg.Timeline)
		}
		tli = h.Timeline
	}
	return first, nil
}

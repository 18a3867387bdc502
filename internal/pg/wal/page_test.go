package wal_test

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
)

const sysID = 7710581529580295899 // testdata/pg15-1mib's system identifier

// longHeader is the first page header of segment 0/3000000 of a PostgreSQL
// 15 cluster with 16 MiB segments, as AdvanceXLInsertBuffer writes it.
func longHeader() wal.PageHeader {
	return wal.PageHeader{
		Magic: 0xD110, Info: wal.XLPLongHeader | wal.XLPBkpRemovable, Timeline: 1,
		PageAddr: 0x3000000, SystemID: sysID, SegSize: 16 << 20, BlockSize: 8192,
	}
}

func encode(h wal.PageHeader) []byte {
	b, _ := h.AppendBinary(nil)
	return b
}

// pageBytes returns a header's encoding padded to a whole page.
func pageBytes(h wal.PageHeader) []byte {
	b := make([]byte, wal.PageSize)
	copy(b, encode(h))
	return b
}

func TestPageHeaderLayout(t *testing.T) {
	// The bytes PostgreSQL 15 wrote at the start of
	// testdata/pg15-1mib/000000010000000000000006 (see xxd).
	real := []byte{
		0x10, 0xd1, 0x07, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x60, 0x00, 0x00, 0x00, 0x00, 0x00,
		0xd9, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xdb, 0x56, 0x52, 0x7a, 0x0c, 0x7d, 0x01, 0x6b,
		0x00, 0x00, 0x10, 0x00, 0x00, 0x20, 0x00, 0x00,
	}
	h, err := wal.ParsePageHeader(real)
	if err != nil {
		t.Fatal(err)
	}
	want := wal.PageHeader{
		Magic: 0xD110, Info: wal.XLPLongHeader | wal.XLPBkpRemovable | wal.XLPFirstIsContRecord, Timeline: 1,
		PageAddr: 0x600000, RemLen: 0xd9, SystemID: sysID, SegSize: 1 << 20, BlockSize: 8192,
	}
	if h != want {
		t.Fatalf("got %+v, want %+v", h, want)
	}
	if !bytes.Equal(encode(h), real) {
		t.Errorf("AppendBinary = % x, want % x", encode(h), real)
	}
	if h.Size() != 40 || !h.Long() || h.PGVersion() != 15 {
		t.Errorf("Size %d Long %v PGVersion %d", h.Size(), h.Long(), h.PGVersion())
	}
	short := wal.PageHeader{Magic: 0xD10D, Info: wal.XLPBkpRemovable, Timeline: 3, PageAddr: 0x1234562000}
	if b := encode(short); len(b) != 24 || short.Size() != 24 {
		t.Errorf("short header: %d bytes, Size %d", len(b), short.Size())
	}
}

func TestParsePageHeader(t *testing.T) {
	mod := func(f func(*wal.PageHeader)) []byte {
		h := longHeader()
		f(&h)
		return pageBytes(h)
	}
	be := longHeader()
	be.BigEndian = true
	beShort := wal.PageHeader{Magic: 0xD106, Info: 1, Timeline: 9, PageAddr: 0xA000, RemLen: 77, BigEndian: true}
	for _, tc := range []struct {
		name string
		page []byte
		want wal.PageHeader
		err  string
	}{
		{"long", pageBytes(longHeader()), longHeader(), ""},
		{"long, exactly 40 bytes", encode(longHeader()), longHeader(), ""},
		{"short", encode(wal.PageHeader{Magic: 0xD116, Timeline: 2, PageAddr: 0x2000, Info: wal.XLPFirstIsContRecord, RemLen: 5}),
			wal.PageHeader{Magic: 0xD116, Timeline: 2, PageAddr: 0x2000, Info: wal.XLPFirstIsContRecord, RemLen: 5}, ""},
		{"overwrite contrecord flag", encode(wal.PageHeader{Magic: 0xD10D, Timeline: 1, PageAddr: 0x4000, Info: wal.XLPFirstIsOverwriteContRecord}),
			wal.PageHeader{Magic: 0xD10D, Timeline: 1, PageAddr: 0x4000, Info: wal.XLPFirstIsOverwriteContRecord}, ""},
		{"big-endian long", pageBytes(be), be, ""},
		{"big-endian short", encode(beShort), beShort, ""},
		{"1 GiB segments", mod(func(h *wal.PageHeader) { h.SegSize, h.PageAddr = 1<<30, 0x40000000 }),
			func() wal.PageHeader { h := longHeader(); h.SegSize, h.PageAddr = 1<<30, 0x40000000; return h }(), ""},

		{"empty", nil, wal.PageHeader{}, "0 bytes, a page header needs 24"},
		{"23 bytes", encode(longHeader())[:23], wal.PageHeader{}, "23 bytes"},
		{"long header cut", encode(longHeader())[:39], wal.PageHeader{}, "39 bytes, a long page header needs 40"},
		{"zeros", make([]byte, 8192), wal.PageHeader{}, "all zeros"},
		{"unknown magic", mod(func(h *wal.PageHeader) { h.Magic = 0xD111 }), wal.PageHeader{}, "unknown magic 0xD111"},
		{"not WAL", []byte("This is a text file, not a WAL segment at all."), wal.PageHeader{}, "unknown magic 0x6854"},
		{"info bits", mod(func(h *wal.PageHeader) { h.Info |= 0x10 }), wal.PageHeader{}, "invalid info bits 0016"},
		{"timeline 0", mod(func(h *wal.PageHeader) { h.Timeline = 0 }), wal.PageHeader{}, "timeline 0"},
		{"unaligned address", mod(func(h *wal.PageHeader) { h.PageAddr = 0x3000028 }), wal.PageHeader{}, "page address 0/3000028 is not on an 8 KiB page boundary"},
		{"long header mid-segment", mod(func(h *wal.PageHeader) { h.PageAddr = 0x3002000 }), wal.PageHeader{}, "long header at page address 0/3002000, which does not start a 16 MiB segment"},
		{"segment size", mod(func(h *wal.PageHeader) { h.SegSize = 3 << 20 }), wal.PageHeader{}, "segment size 3145728"},
		{"block size", mod(func(h *wal.PageHeader) { h.BlockSize = 16384 }), wal.PageHeader{}, "WAL page size 16384"},
	} {
		got, err := wal.ParsePageHeader(tc.page)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, wal.ErrInvalidPage) {
				t.Errorf("%s: error = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

func TestPGVersionFromMagic(t *testing.T) {
	for _, tc := range []struct {
		magic uint16
		want  int
		ok    bool
	}{
		{0xD097, 10, true}, {0xD098, 11, true}, {0xD101, 12, true},
		{0xD106, 13, true}, {0xD10D, 14, true}, {0xD110, 15, true}, {0xD113, 16, true}, {0xD116, 17, true},
		{0xD118, 18, true},
		{0, 0, false}, {0xD111, 0, false}, {0x10D1, 0, false}, {0xD093, 0, false},
	} {
		got, ok := wal.PGVersionFromMagic(tc.magic)
		if got != tc.want || ok != tc.ok {
			t.Errorf("PGVersionFromMagic(%#04x) = %d, %v; want %d, %v", tc.magic, got, ok, tc.want, tc.ok)
		}
	}
}

// putShort overwrites the page header at off.
func putShort(data []byte, off int, h wal.PageHeader) {
	copy(data[off:off+wal.ShortPageHeaderSize], encode(h))
}

func TestValidateSegment(t *testing.T) {
	const seg16 = 16 << 20
	good := func() []byte { return wal.FakeSegment(1, 0x3000000, seg16, sysID) }
	withTail := func(data []byte, from int) []byte {
		clear(data[from:])
		return data
	}
	short := func(tli uint32, addr pglogrepl.LSN) wal.PageHeader {
		return wal.PageHeader{Magic: 0xD110, Info: wal.XLPBkpRemovable, Timeline: tli, PageAddr: addr}
	}
	for _, tc := range []struct {
		name    string
		file    string
		data    []byte
		segSize uint64
		tli     uint32 // of the returned header
		err     string
	}{
		{"fake", "000000010000000000000003", good(), seg16, 1, ""},
		{"zero tail", "000000010000000000000003", withTail(good(), 5*8192), seg16, 1, ""},
		{"only the first page", "000000010000000000000003", withTail(good(), 8192), seg16, 1, ""},
		{"after a timeline switch", "000000020000000000000003", func() []byte {
			d := good()
			for off := 100 * 8192; off < seg16; off += 8192 {
				putShort(d, off, short(2, pglogrepl.LSN(0x3000000+off)))
			}
			return d
		}(), seg16, 1, ""},
		{"1 MiB segments", "00000003000000000000000B", wal.FakeSegment(3, 0xB000A0, 1<<20, sysID), 1 << 20, 3, ""},
		{"partial, one page", "000000010000000000000003.partial", good()[:8192], seg16, 1, ""},
		{"partial, header only", "000000010000000000000003.partial", good()[:40], seg16, 1, ""},
		{"partial, odd length", "000000010000000000000003.partial", good()[:12345], seg16, 1, ""},
		{"partial, full length with stale pages", "000000010000000000000003.partial", func() []byte {
			d := good()
			putShort(d, 8192, short(1, 0x2002000))
			return d
		}(), seg16, 1, ""},

		{"page address", "000000010000000000000003", wal.FakeSegment(1, 0x2000000, seg16, sysID), seg16, 0,
			"WAL file 000000010000000000000003: page address 0/2000000 does not match the segment start 0/3000000"},
		{"short file", "000000010000000000000003", good()[:seg16-8192], seg16, 0,
			"WAL file 000000010000000000000003: 16769024 bytes, a complete segment is 16777216 (16 MiB)"},
		{"empty file", "000000010000000000000003", nil, seg16, 0, "0 bytes, a complete segment is"},
		{"segment size", "000000010000000000000003", good(), 1 << 20, 0, "16777216 bytes, a complete segment is 1048576 (1 MiB)"},
		{"header segment size", "00000001000000000000000C", func() []byte {
			d := wal.FakeSegment(1, 0xC00000, 1<<20, sysID)
			h := longHeader()
			h.PageAddr, h.SegSize = 0xC00000, 2<<20
			copy(d, encode(h))
			return d
		}(), 1 << 20, 0, "written with a WAL segment size of 2 MiB, expected 1 MiB"},
		{"newer timeline inside", "000000010000000000000003", wal.FakeSegment(2, 0x3000000, seg16, sysID), seg16, 0,
			"first page is on timeline 2, later than the file name's 1"},
		{"short first header", "000000010000000000000003", func() []byte {
			d := good()
			clear(d[:40])
			putShort(d, 0, short(1, 0x3000000))
			return d
		}(), seg16, 0, "first page has a short header (xlp_info 0004)"},
		{"garbage", "000000010000000000000003", bytes.Repeat([]byte("garbage!"), seg16/8), seg16, 0,
			"WAL file 000000010000000000000003: first page: invalid WAL page header: unknown magic 0x6167"},
		{"zero first page", "000000010000000000000003", make([]byte, seg16), seg16, 0, "first page: invalid WAL page header: the header is all zeros"},
		{"stale page", "000000010000000000000003", func() []byte {
			d := good()
			putShort(d, 3*8192, short(1, 0x2006000))
			return d
		}(), seg16, 0, "WAL file 000000010000000000000003: page 3 (offset 24576): page address 0/2006000, expected 0/3006000"},
		{"header after zeros", "000000010000000000000003", func() []byte {
			d := withTail(good(), 4*8192)
			putShort(d, 9*8192, short(1, 0x3012000))
			return d
		}(), seg16, 0, "page 9 (offset 73728): holds a page header after the zeroed pages from offset 32768"},
		{"timeline goes back", "000000020000000000000003", func() []byte {
			d := wal.FakeSegment(2, 0x3000000, seg16, sysID)
			putShort(d, 7*8192, short(1, 0x300E000))
			return d
		}(), seg16, 0, "page 7 (offset 57344): out-of-sequence timeline 1 (after 2)"},
		{"later page past the name's timeline", "000000010000000000000003", func() []byte {
			d := good()
			putShort(d, 7*8192, short(2, 0x300E000))
			return d
		}(), seg16, 0, "timeline 2, later than the file name's 1"},
		{"long header inside", "000000010000000000000003", func() []byte {
			d := good()
			h := longHeader()
			h.PageAddr = 0x3002000
			copy(d[8192:], encode(h))
			return d
		}(), seg16, 0, "page 1 (offset 8192): invalid WAL page header: long header at page address 0/3002000"},
		{"magic changes", "000000010000000000000003", func() []byte {
			d := good()
			h := short(1, 0x3004000)
			h.Magic = 0xD113
			putShort(d, 2*8192, h)
			return d
		}(), seg16, 0, "page 2 (offset 16384): magic D113 differs from the first page's D110"},
		{"bad page", "000000010000000000000003", func() []byte {
			d := good()
			binary.LittleEndian.PutUint16(d[5*8192:], 0x1234)
			return d
		}(), seg16, 0, "page 5 (offset 40960): invalid WAL page header: unknown magic 0x1234"},
		{"partial too short", "000000010000000000000003.partial", good()[:39], seg16, 0, "39 bytes, too short to hold the first page's header"},
		{"partial too long", "000000010000000000000003.partial", append(good(), 0), seg16, 0, "16777217 bytes, more than a 16 MiB segment"},
		{"partial, wrong address", "000000010000000000000004.partial", good()[:8192], seg16, 0, "page address 0/3000000 does not match the segment start 0/4000000"},
		{"history name", "00000002.history", good(), seg16, 0, `WAL file 00000002.history: invalid WAL file name "00000002.history": not a WAL segment name`},
		{"out of range name", "000000010000000000000100", good(), seg16, 0, "out of range for 16 MiB segments"},
		{"bad size", "000000010000000000000003", good(), 0, 0, "invalid WAL segment size 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := wal.ValidateSegment(tc.file, tc.data, tc.segSize)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v\nwant one containing %q", err, tc.err)
				}
				var se *wal.SegmentError
				if !errors.Is(err, wal.ErrInvalidSegment) || !errors.As(err, &se) || se.Name != tc.file {
					t.Errorf("error %v is not a *SegmentError for %s matching ErrInvalidSegment", err, tc.file)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Timeline != tc.tli || !h.Long() || h.SystemID != sysID {
				t.Errorf("header %+v", h)
			}
		})
	}
	_, err := wal.ValidateSegment("x", nil, 16<<20)
	if !errors.Is(err, wal.ErrInvalidName) {
		t.Errorf("error %v does not match ErrInvalidName", err)
	}
	_, err = wal.ValidateSegment("000000010000000000000003", make([]byte, 16<<20), 16<<20)
	if !errors.Is(err, wal.ErrInvalidPage) {
		t.Errorf("error %v does not match ErrInvalidPage", err)
	}
}

func TestValidateSegmentBigEndian(t *testing.T) {
	data := make([]byte, 1<<20)
	for off := 0; off < len(data); off += wal.PageSize {
		h := wal.PageHeader{Magic: 0xD110, Timeline: 4, PageAddr: pglogrepl.LSN(0x7700000 + off), BigEndian: true}
		if off == 0 {
			h.Info, h.SystemID, h.SegSize, h.BlockSize = wal.XLPLongHeader, 42, 1<<20, 8192
		}
		copy(data[off:], encode(h))
	}
	h, err := wal.ValidateSegment("000000040000000000000077", data, 1<<20)
	if err != nil || !h.BigEndian || h.SystemID != 42 {
		t.Fatalf("%+v, %v", h, err)
	}
	// A little-endian page in a big-endian segment is not the same WAL.
	copy(data[3*8192:], encode(wal.PageHeader{Magic: 0xD110, Timeline: 4, PageAddr: 0x7706000}))
	if _, err := wal.ValidateSegment("000000040000000000000077", data, 1<<20); err == nil || !strings.Contains(err.Error(), "page 3") {
		t.Errorf("mixed byte order: %v", err)
	}
}

// readFixture reads a file from testdata, gunzipping *.gz.
func readFixture(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(path, ".gz") {
		return data
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRealSegments validates segments PostgreSQL 15 wrote; see
// testdata/README.md for how they were made.
func TestRealSegments(t *testing.T) {
	for _, tc := range []struct {
		path     string
		segSize  uint64
		tli      uint32 // xlp_tli of the first page
		info     uint16
		pageAddr pglogrepl.LSN
	}{
		// Full of WAL records, the last page zeroed by a WAL switch; begins
		// with the rest of a record from segment 5.
		{"pg15-1mib/000000010000000000000006.gz", 1 << 20, 1, 0x0007, 0x600000},
		// The end of timeline 1, renamed .partial at the end of archive
		// recovery: after the switch point it holds a recycled segment's
		// stale pages (page 1 claims to be 0/602000).
		{"pg15-1mib/00000001000000000000000B.partial.gz", 1 << 20, 1, 0x0006, 0xB00000},
		// Timeline 2's copy of that segment: its first page is still
		// timeline 1's.
		{"pg15-1mib/00000002000000000000000B.gz", 1 << 20, 1, 0x0006, 0xB00000},
		// Written during a base backup (no XLP_BKP_REMOVABLE), then switched.
		{"pg15-16mib/000000010000000000000003.gz", 16 << 20, 1, 0x0002, 0x3000000},
	} {
		data := readFixture(t, filepath.Join("testdata", tc.path))
		name := strings.TrimSuffix(filepath.Base(tc.path), ".gz")
		h, err := wal.ValidateSegment(name, data, tc.segSize)
		if err != nil {
			t.Errorf("%s: %v", tc.path, err)
			continue
		}
		if h.Timeline != tc.tli || h.Info != tc.info || h.PageAddr != tc.pageAddr || h.PGVersion() != 15 ||
			uint64(h.SegSize) != tc.segSize || h.BlockSize != 8192 || h.SystemID == 0 {
			t.Errorf("%s: header %+v", tc.path, h)
		}
	}

	// The same bytes under the wrong name, or as a complete segment, fail.
	partial := readFixture(t, "testdata/pg15-1mib/00000001000000000000000B.partial.gz")
	for _, tc := range []struct {
		name    string
		segSize uint64
		err     string
	}{
		{"00000001000000000000000B", 1 << 20, "WAL file 00000001000000000000000B: page 1 (offset 8192): page address 0/602000, expected 0/B02000"},
		{"00000001000000000000000C.partial", 1 << 20, "page address 0/B00000 does not match the segment start 0/C00000"},
		{"00000001000000000000000B.partial", 16 << 20, "written with a WAL segment size of 1 MiB, expected 16 MiB"},
	} {
		if _, err := wal.ValidateSegment(tc.name, partial, tc.segSize); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error = %v, want %q", tc.name, err, tc.err)
		}
	}

	// Backup history files: the name matches the START WAL LOCATION inside.
	for _, tc := range []struct {
		path    string
		segSize uint64
	}{
		{"testdata/pg15-1mib/000000010000000000000008.00000028.backup", 1 << 20},
		{"testdata/pg15-16mib/000000010000000000000003.00000028.backup", 16 << 20},
	} {
		data := readFixture(t, tc.path)
		var start string
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "START WAL LOCATION: "); ok {
				start, _, _ = strings.Cut(rest, " ")
			}
		}
		if got := wal.BackupHistoryName(1, lsn(t, start), tc.segSize); got != filepath.Base(tc.path) {
			t.Errorf("BackupHistoryName(1, %s) = %s, want %s", start, got, filepath.Base(tc.path))
		}
	}
}

func TestFakeSegment(t *testing.T) {
	for _, size := range []uint64{1 << 20, 16 << 20, 64 << 20} {
		d := wal.FakeSegment(5, 0x123456789, size, 99)
		name := wal.SegmentName(5, 0x123456789, size)
		h, err := wal.ValidateSegment(name, d, size)
		if err != nil || h.SystemID != 99 || h.Timeline != 5 || uint64(len(d)) != size {
			t.Errorf("FakeSegment(%d): %+v, %v", size, h, err)
		}
	}
}

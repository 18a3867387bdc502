package wal_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
)

const (
	mib = uint64(1) << 20
	gib = uint64(1) << 30
)

func lsn(t testing.TB, s string) pglogrepl.LSN {
	t.Helper()
	v, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatalf("ParseLSN(%q): %v", s, err)
	}
	return v
}

func TestValidSegmentSize(t *testing.T) {
	for _, tc := range []struct {
		size uint64
		want bool
	}{
		{0, false}, {512 << 10, false}, {mib, true}, {2 * mib, true}, {3 * mib, false},
		{16 * mib, true}, {64 * mib, true}, {gib, true}, {2 * gib, false}, {16*mib + 1, false},
		{^uint64(0), false},
	} {
		if got := wal.ValidSegmentSize(tc.size); got != tc.want {
			t.Errorf("ValidSegmentSize(%d) = %v, want %v", tc.size, got, tc.want)
		}
	}
}

func TestSegmentName(t *testing.T) {
	for _, tc := range []struct {
		tli     uint32
		lsn     string
		segSize uint64
		want    string
	}{
		{1, "0/0", 16 * mib, "000000010000000000000000"},
		{1, "0/3000028", 16 * mib, "000000010000000000000003"},
		{1, "0/3FFFFFF", 16 * mib, "000000010000000000000003"},
		{1, "0/FF000000", 16 * mib, "0000000100000000000000FF"},
		{1, "1/0", 16 * mib, "000000010000000100000000"},
		{0x2A, "A/B1234567", 16 * mib, "0000002A0000000A000000B1"},
		{0xFFFFFFFF, "FFFFFFFF/FFFFFFFF", 16 * mib, "FFFFFFFFFFFFFFFF000000FF"},
		// Other segment sizes: the last eight digits count segments of
		// that size within an xlogid (4 GiB).
		{1, "0/B000A0", mib, "00000001000000000000000B"},
		{1, "0/FFF00000", mib, "000000010000000000000FFF"},
		{1, "2/100000", mib, "000000010000000200000001"},
		{3, "1/C0000000", gib, "000000030000000100000003"},
		{1, "0/3FFFFFFF", gib, "000000010000000000000000"},
		{1, "0/7000000", 64 * mib, "000000010000000000000001"},
	} {
		if got := wal.SegmentName(tc.tli, lsn(t, tc.lsn), tc.segSize); got != tc.want {
			t.Errorf("SegmentName(%d, %s, %d) = %s, want %s", tc.tli, tc.lsn, tc.segSize, got, tc.want)
		}
	}
}

func TestParseSegmentName(t *testing.T) {
	for _, tc := range []struct {
		name    string
		segSize uint64
		tli     uint32
		start   string
		err     string // substring; "" means success
	}{
		{"000000010000000000000003", 16 * mib, 1, "0/3000000", ""},
		{"000000010000000100000000", 16 * mib, 1, "1/0", ""},
		{"0000002A0000000A000000B1", 16 * mib, 0x2A, "A/B1000000", ""},
		{"FFFFFFFFFFFFFFFF000000FF", 16 * mib, 0xFFFFFFFF, "FFFFFFFF/FF000000", ""},
		{"00000001000000000000000B", mib, 1, "0/B00000", ""},
		{"000000010000000000000FFF", mib, 1, "0/FFF00000", ""},
		{"000000030000000100000003", gib, 3, "1/C0000000", ""},
		{"000000010000000000000100", mib, 1, "0/10000000", ""},
		// Segment part out of range for the size.
		{"000000010000000000000100", 16 * mib, 0, "", "segment part 00000100 is out of range for 16 MiB segments (at most 000000FF)"},
		{"000000010000000000000004", gib, 0, "", "out of range for 1 GiB segments"},
		{"000000010000000000001000", mib, 0, "", "out of range"},
		// Syntax.
		{"00000001000000000000000b", 16 * mib, 0, "", "24 upper-case hex digits"},
		{"00000001000000000000003", 16 * mib, 0, "", "invalid WAL file name"},
		{"0000000100000000000000030", 16 * mib, 0, "", "invalid WAL file name"},
		{"000000000000000000000003", 16 * mib, 0, "", "timeline 1 or more"},
		{"000000010000000000000003.partial", 16 * mib, 0, "", "invalid WAL file name"},
		{"00000002.history", 16 * mib, 0, "", "invalid WAL file name"},
		{"", 16 * mib, 0, "", "invalid WAL file name"},
		{"0000000G0000000000000003", 16 * mib, 0, "", "invalid WAL file name"},
		{"+00000010000000000000003", 16 * mib, 0, "", "invalid WAL file name"},
		// Segment size.
		{"000000010000000000000003", 0, 0, "", "invalid WAL segment size 0"},
		{"000000010000000000000003", 3 * mib, 0, "", "power of two"},
	} {
		tli, start, err := wal.ParseSegmentName(tc.name, tc.segSize)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseSegmentName(%q, %d) error = %v, want one containing %q", tc.name, tc.segSize, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseSegmentName(%q, %d): %v", tc.name, tc.segSize, err)
			continue
		}
		if tli != tc.tli || start != lsn(t, tc.start) {
			t.Errorf("ParseSegmentName(%q, %d) = %d, %s; want %d, %s", tc.name, tc.segSize, tli, start, tc.tli, tc.start)
		}
		if back := wal.SegmentName(tli, start, tc.segSize); back != tc.name {
			t.Errorf("SegmentName(ParseSegmentName(%q)) = %q", tc.name, back)
		}
	}
	if _, _, err := wal.ParseSegmentName("nope", 16*mib); !errors.Is(err, wal.ErrInvalidName) {
		t.Errorf("error %v does not match ErrInvalidName", err)
	}
}

func TestSegmentArithmetic(t *testing.T) {
	for _, tc := range []struct {
		lsn     string
		segSize uint64
		no      uint64
		endNo   uint64
		offset  uint64
		start   string
		next    string
	}{
		{"0/0", 16 * mib, 0, 0, 0, "0/0", "0/1000000"},
		{"0/1", 16 * mib, 0, 0, 1, "0/0", "0/1000000"},
		{"0/3000028", 16 * mib, 3, 3, 0x28, "0/3000000", "0/4000000"},
		{"0/4000000", 16 * mib, 4, 3, 0, "0/4000000", "0/5000000"},
		{"0/FFFFFFFF", 16 * mib, 0xFF, 0xFF, 0xFFFFFF, "0/FF000000", "1/0"},
		{"1/0", 16 * mib, 0x100, 0xFF, 0, "1/0", "1/1000000"},
		{"0/B000A0", mib, 0xB, 0xB, 0xA0, "0/B00000", "0/C00000"},
		{"1/C0000001", gib, 7, 7, 1, "1/C0000000", "2/0"},
		{"FFFFFFFF/FFFFFFFF", 16 * mib, 0xFFFFFFFFFF, 0xFFFFFFFFFF, 0xFFFFFF, "FFFFFFFF/FF000000", "0/0"},
	} {
		l := lsn(t, tc.lsn)
		if got := wal.SegmentNo(l, tc.segSize); got != tc.no {
			t.Errorf("SegmentNo(%s, %d) = %d, want %d", tc.lsn, tc.segSize, got, tc.no)
		}
		if got := wal.EndSegmentNo(l, tc.segSize); got != tc.endNo {
			t.Errorf("EndSegmentNo(%s, %d) = %d, want %d", tc.lsn, tc.segSize, got, tc.endNo)
		}
		if got := wal.SegmentOffset(l, tc.segSize); got != tc.offset {
			t.Errorf("SegmentOffset(%s, %d) = %#x, want %#x", tc.lsn, tc.segSize, got, tc.offset)
		}
		if got := wal.SegmentStart(l, tc.segSize); got != lsn(t, tc.start) {
			t.Errorf("SegmentStart(%s, %d) = %s, want %s", tc.lsn, tc.segSize, got, tc.start)
		}
		if got := wal.NextSegment(l, tc.segSize); got != lsn(t, tc.next) {
			t.Errorf("NextSegment(%s, %d) = %s, want %s", tc.lsn, tc.segSize, got, tc.next)
		}
		s := wal.SegmentOf(7, l, tc.segSize)
		if s.Start(tc.segSize) != lsn(t, tc.start) || s.Next().No != tc.no+1 || s.Timeline != 7 {
			t.Errorf("SegmentOf(7, %s, %d) = %+v: Start %s, Next %+v", tc.lsn, tc.segSize, s, s.Start(tc.segSize), s.Next())
		}
	}
	if got := wal.SegmentsPerXLogID(16 * mib); got != 256 {
		t.Errorf("SegmentsPerXLogID(16 MiB) = %d", got)
	}
	if got := (wal.Segment{Timeline: 1, No: 3}).PartialName(16 * mib); got != "000000010000000000000003.partial" {
		t.Errorf("PartialName = %q", got)
	}
}

func TestInvalidSegmentSizePanics(t *testing.T) {
	for name, f := range map[string]func(){
		"SegmentName":  func() { wal.SegmentName(1, 0, 0) },
		"SegmentStart": func() { wal.SegmentStart(0, 1000) },
		"NextSegment":  func() { wal.NextSegment(0, 3*mib) },
		"SegmentNo":    func() { wal.SegmentNo(0, 2*gib) },
	} {
		func() {
			defer func() {
				r := recover()
				if r == nil || !strings.Contains(r.(string), "invalid WAL segment size") {
					t.Errorf("%s with an invalid size: recover() = %v", name, r)
				}
			}()
			f()
		}()
	}
}

func TestNameHelpers(t *testing.T) {
	if got := wal.HistoryFileName(2); got != "00000002.history" {
		t.Errorf("HistoryFileName(2) = %q", got)
	}
	if got := wal.HistoryFileName(0x1F); got != "0000001F.history" {
		t.Errorf("HistoryFileName(0x1F) = %q", got)
	}
	for _, tc := range []struct {
		tli     uint32
		lsn     string
		segSize uint64
		want    string
	}{
		{1, "0/2000028", 16 * mib, "000000010000000000000002.00000028.backup"},
		{1, "0/3000028", 16 * mib, "000000010000000000000003.00000028.backup"}, // testdata/pg15-16mib
		{1, "0/800028", mib, "000000010000000000000008.00000028.backup"},       // testdata/pg15-1mib
		{2, "1/2ABCDEF0", 16 * mib, "00000002000000010000002A.00BCDEF0.backup"},
		{2, "1/2ABCDEF0", gib, "000000020000000100000000.2ABCDEF0.backup"},
	} {
		if got := wal.BackupHistoryName(tc.tli, lsn(t, tc.lsn), tc.segSize); got != tc.want {
			t.Errorf("BackupHistoryName(%d, %s, %d) = %q, want %q", tc.tli, tc.lsn, tc.segSize, got, tc.want)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name string
		want wal.FileKind
	}{
		{"000000010000000000000003", wal.KindSegment},
		{"FFFFFFFFFFFFFFFFFFFFFFFF", wal.KindSegment},
		{"000000010000000000000003.partial", wal.KindPartial},
		{"00000002.history", wal.KindHistory},
		{"0000000A.history", wal.KindHistory},
		{"000000010000000000000002.00000028.backup", wal.KindBackupHistory},
		{"", wal.KindInvalid},
		{"00000000.history", wal.KindInvalid},
		{"000000000000000000000003", wal.KindInvalid},
		{"000000000000000000000003.partial", wal.KindInvalid},
		{"0000000a.history", wal.KindInvalid},
		{"00000002.History", wal.KindInvalid},
		{"2.history", wal.KindInvalid},
		{"00000002.history.tmp", wal.KindInvalid},
		{"000000010000000000000003.partial.gz", wal.KindInvalid},
		{"000000010000000000000003.gz", wal.KindInvalid},
		{"000000010000000000000003.ready", wal.KindInvalid},
		{"000000010000000000000002.00000028.Backup", wal.KindInvalid},
		{"000000010000000000000002.0000028.backup", wal.KindInvalid},
		{"000000010000000000000002.0000002g.backup", wal.KindInvalid},
		{"000000010000000000000002_00000028.backup", wal.KindInvalid},
		{"000000010000000000000002.backup", wal.KindInvalid},
		{"archive_status", wal.KindInvalid},
		{"xlogtemp.123", wal.KindInvalid},
		{"../00000001000000000000003", wal.KindInvalid},
		{"pg_wal/000000010000000000000003", wal.KindInvalid},
	} {
		if got := wal.Classify(tc.name); got != tc.want {
			t.Errorf("Classify(%q) = %v, want %v", tc.name, got, tc.want)
		}
		if got := wal.IsValidName(tc.name); got != (tc.want != wal.KindInvalid) {
			t.Errorf("IsValidName(%q) = %v", tc.name, got)
		}
	}
	for k, s := range map[wal.FileKind]string{
		wal.KindInvalid: "invalid", wal.KindSegment: "segment", wal.KindPartial: "partial segment",
		wal.KindHistory: "timeline history", wal.KindBackupHistory: "backup history", wal.FileKind(99): "invalid",
	} {
		if k.String() != s {
			t.Errorf("FileKind(%d).String() = %q, want %q", k, k.String(), s)
		}
	}
}

func TestParseFileName(t *testing.T) {
	for _, tc := range []struct {
		name    string
		segSize uint64
		want    wal.FileName
		err     string
	}{
		{"000000010000000000000003", 16 * mib, wal.FileName{Kind: wal.KindSegment, Timeline: 1, SegNo: 3}, ""},
		{"000000020000000100000003.partial", 16 * mib, wal.FileName{Kind: wal.KindPartial, Timeline: 2, SegNo: 0x103}, ""},
		{"0000000B.history", 16 * mib, wal.FileName{Kind: wal.KindHistory, Timeline: 11}, ""},
		{"000000010000000000000002.00000028.backup", 16 * mib, wal.FileName{Kind: wal.KindBackupHistory, Timeline: 1, SegNo: 2, Offset: 0x28}, ""},
		{"000000010000000000000008.000FFFF8.backup", mib, wal.FileName{Kind: wal.KindBackupHistory, Timeline: 1, SegNo: 8, Offset: 0xFFFF8}, ""},
		{"000000010000000000000008.00100000.backup", mib, wal.FileName{}, "backup offset 00100000 is beyond a 1 MiB segment"},
		{"000000010000000000000100.partial", 16 * mib, wal.FileName{}, "out of range"},
		{"000000010000000000000100.00000028.backup", 16 * mib, wal.FileName{}, "out of range"},
		{"00000001000000000000000.partial", 16 * mib, wal.FileName{}, "invalid WAL file name"},
		{"00000002.history", 0, wal.FileName{}, "invalid WAL segment size"},
	} {
		got, err := wal.ParseFileName(tc.name, tc.segSize)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseFileName(%q, %d) error = %v, want %q", tc.name, tc.segSize, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseFileName(%q, %d) = %+v, %v; want %+v", tc.name, tc.segSize, got, err, tc.want)
		}
	}
	f, err := wal.ParseFileName("000000010000000000000002.00000028.backup", 16*mib)
	if err != nil || f.BackupStart(16*mib) != lsn(t, "0/2000028") || f.Segment() != (wal.Segment{Timeline: 1, No: 2}) {
		t.Errorf("backup history name: %+v, %v, start %s", f, err, f.BackupStart(16*mib))
	}
}

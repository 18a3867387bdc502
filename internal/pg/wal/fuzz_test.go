package wal_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
)

// Fuzz targets for every decoder of WAL bytes and names. Their seed corpora
// run in a plain `go test`; `make fuzz` (or go test -fuzz '^FuzzX$') explores.

func FuzzParseHistory(f *testing.F) {
	for _, s := range []string{
		"",
		"1\t0/B000A0\tno recovery target specified\n",
		"1\t0/1A0000A0\tno recovery target specified\n\n2\t0/6DB5210\tafter LSN 0/6DB51E0\n",
		"# comment\n1\t0/3000100\ta\n2\t0/5000000\tb\r\n3\t0/5000200\t\n",
		"  7 FFFFFFFF/FFFFFFFF   at restore point \"x\"",
		"1\t0/1\ta\n1\t0/2\tb\n",
		"4294967295\t0/1\n",
		"1\t0/0\n",
		"x\n",
	} {
		f.Add([]byte(s))
	}
	for _, p := range []string{"testdata/pg15-timeline3/00000003.history", "testdata/pg15-1mib/00000002.history"} {
		f.Add(readFixture(f, p))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := wal.ParseHistory(data)
		if err != nil {
			if !errors.Is(err, wal.ErrInvalidHistory) {
				t.Fatalf("error %v does not match ErrInvalidHistory", err)
			}
			return
		}
		again, err := wal.ParseHistory(wal.FormatHistory(h))
		if err != nil || !(len(h) == 0 && len(again) == 0 || reflect.DeepEqual(again, h)) {
			t.Fatalf("round trip of %+v: %+v, %v", h, again, err)
		}
		target := uint32(1)
		if len(h) > 0 {
			last := h[len(h)-1].Timeline
			if last == ^uint32(0) {
				if _, err := wal.Ancestors(h, last); err == nil {
					t.Fatal("Ancestors accepted a target not newer than its history")
				}
				return
			}
			target = last + 1
		}
		checkAgreement(t, h, target, probes(h))

		// A plan from 0/0 to each probe covers every segment once, in order.
		const segSize = 16 << 20
		startTLI, _ := wal.TimelineOf(h, target, 0)
		for _, stop := range probes(h) {
			runs, err := wal.RequiredSegments(h, target, startTLI, 0, stop, segSize)
			if err != nil {
				t.Fatalf("RequiredSegments(0, %s): %v", stop, err)
			}
			next := uint64(0)
			for i, r := range runs {
				if r.First != next || r.Last < r.First || (i > 0 && r.Timeline <= runs[i-1].Timeline) {
					t.Fatalf("RequiredSegments(0, %s) = %+v", stop, runs)
				}
				if tli, _ := wal.TimelineOf(h, target, pglogrepl.LSN(r.Last*segSize)); tli > r.Timeline {
					t.Fatalf("segment %d planned on %d but its start is on %d: %+v", r.Last, r.Timeline, tli, runs)
				}
				next = r.Last + 1
			}
			if len(runs) == 0 || next != wal.SegmentNo(stop, segSize)+1 {
				t.Fatalf("RequiredSegments(0, %s) = %+v", stop, runs)
			}
		}
	})
}

func FuzzParsePageHeader(f *testing.F) {
	f.Add(encode(longHeader()))
	f.Add(pageBytes(longHeader()))
	be := longHeader()
	be.BigEndian = true
	f.Add(encode(be))
	f.Add(encode(wal.PageHeader{Magic: 0xD106, Info: wal.XLPFirstIsContRecord, Timeline: 2, PageAddr: 0x2000, RemLen: 100}))
	f.Add(encode(wal.PageHeader{Magic: 0xD116, Info: wal.XLPFirstIsOverwriteContRecord, Timeline: 1, PageAddr: 0x4000}))
	f.Add(readFixture(f, "testdata/pg15-1mib/00000002000000000000000B.gz")[:64])
	f.Add(make([]byte, 24))
	f.Add([]byte("not a WAL page"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := wal.ParsePageHeader(data)
		if err != nil {
			if !errors.Is(err, wal.ErrInvalidPage) {
				t.Fatalf("error %v does not match ErrInvalidPage", err)
			}
			return
		}
		if h.Timeline == 0 || h.PageAddr%wal.PageSize != 0 || h.PGVersion() == 0 {
			t.Fatalf("accepted %+v", h)
		}
		enc, _ := h.AppendBinary(nil)
		if len(enc) != h.Size() || len(data) < h.Size() {
			t.Fatalf("%+v: encoded %d bytes from %d", h, len(enc), len(data))
		}
		// Equal to the input except the 4 bytes of padding.
		want := bytes.Clone(data[:h.Size()])
		clear(want[20:24])
		if !bytes.Equal(enc, want) {
			t.Fatalf("%+v encodes as % x, input % x", h, enc, want)
		}
		again, err := wal.ParsePageHeader(enc)
		if err != nil || again != h {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, h)
		}
	})
}

// FuzzValidateSegment validates name over head: as a partial segment's bytes,
// or (complete) at the start of a zero-filled segment of 1, 2 or 4 MiB.
func FuzzValidateSegment(f *testing.F) {
	first := longHeader()
	first.PageAddr, first.SegSize = 0x300000, 1<<20
	twoPages := pageBytes(first)
	twoPages = append(twoPages, encode(wal.PageHeader{Magic: 0xD110, Info: wal.XLPFirstIsContRecord | wal.XLPBkpRemovable, Timeline: 1, PageAddr: 0x302000, RemLen: 12})...)
	f.Add("000000010000000000000003", twoPages, uint8(0), true)
	f.Add("000000010000000000000003.partial", twoPages, uint8(0), false)
	f.Add("000000020000000000000003", twoPages, uint8(0), true)
	f.Add("000000010000000000000002", twoPages, uint8(0), true)
	f.Add("000000010000000000000003", wal.FakeSegment(1, 0x400000, 2<<20, 7)[:3*8192], uint8(1), true)
	f.Add("000000010000000000000001", wal.FakeSegment(1, 0x400000, 4<<20, 7)[:3*8192], uint8(2), true)
	f.Add("00000001000000000000000B.partial", readFixture(f, "testdata/pg15-1mib/00000001000000000000000B.partial.gz")[:2*8192], uint8(0), false)
	f.Add("00000002000000000000000B", readFixture(f, "testdata/pg15-1mib/00000002000000000000000B.gz")[:2*8192], uint8(0), true)
	f.Add("00000002.history", []byte("1\t0/B000A0\tx\n"), uint8(0), false)
	f.Add("000000010000000000000003", twoPages, uint8(255), true)
	f.Fuzz(func(t *testing.T, name string, head []byte, sizeSel uint8, complete bool) {
		segSize := uint64(1<<20) << (sizeSel % 3)
		if sizeSel == 255 {
			segSize = 3 << 20 // invalid
		}
		data := head
		if complete && uint64(len(head)) <= segSize {
			data = make([]byte, segSize)
			copy(data, head)
		}
		h, err := wal.ValidateSegment(name, data, segSize)
		if err != nil {
			var se *wal.SegmentError
			if !errors.Is(err, wal.ErrInvalidSegment) || !errors.As(err, &se) || !strings.HasPrefix(err.Error(), "WAL file "+name+": ") {
				t.Fatalf("error %v: not a *SegmentError for %q", err, name)
			}
			return
		}
		fn, err := wal.ParseFileName(name, segSize)
		if err != nil || (fn.Kind != wal.KindSegment && fn.Kind != wal.KindPartial) {
			t.Fatalf("validated %q, which ParseFileName gives as %+v, %v", name, fn, err)
		}
		if h.PageAddr != fn.Segment().Start(segSize) || h.Timeline > fn.Timeline || h.Timeline == 0 ||
			uint64(h.SegSize) != segSize || !h.Long() || uint64(len(data)) > segSize ||
			(fn.Kind == wal.KindSegment && uint64(len(data)) != segSize) {
			t.Fatalf("validated %q (%d bytes, segment size %d) with header %+v", name, len(data), segSize, h)
		}
		if again, err := wal.ParsePageHeader(data); err != nil || again != h {
			t.Fatalf("ParsePageHeader: %+v, %v; ValidateSegment gave %+v", again, err, h)
		}
	})
}

func FuzzParseSegmentName(f *testing.F) {
	for _, s := range []string{
		"000000010000000000000003", "FFFFFFFFFFFFFFFF000000FF", "000000010000000000000100", "00000001000000000000000b",
		"000000000000000000000003", "000000010000000000000003.partial", "00000002.history", "00000000.history",
		"000000010000000000000002.00000028.backup", "000000010000000000000008.00100000.backup", "", "x",
	} {
		f.Add(s, uint8(4))
		f.Add(s, uint8(0))
	}
	f.Add("000000030000000100000003", uint8(10))
	f.Add("000000010000000000000003", uint8(200))
	f.Fuzz(func(t *testing.T, name string, shift uint8) {
		segSize := uint64(1) << (16 + shift%16) // 64 KiB to 2 GiB: some invalid
		if shift >= 200 {
			segSize = uint64(shift) << 20
		}
		valid := wal.ValidSegmentSize(segSize)

		tli, start, err := wal.ParseSegmentName(name, segSize)
		if err == nil {
			if !valid || tli == 0 || wal.SegmentOffset(start, segSize) != 0 {
				t.Fatalf("ParseSegmentName(%q, %d) = %d, %s", name, segSize, tli, start)
			}
			if back := wal.SegmentName(tli, start, segSize); back != name {
				t.Fatalf("ParseSegmentName(%q, %d) = %d, %s, which is named %q", name, segSize, tli, start, back)
			}
		} else if valid && !errors.Is(err, wal.ErrInvalidName) {
			t.Fatalf("ParseSegmentName(%q): %v does not match ErrInvalidName", name, err)
		}

		kind := wal.Classify(name)
		if wal.IsValidName(name) != (kind != wal.KindInvalid) {
			t.Fatalf("IsValidName(%q) disagrees with Classify", name)
		}
		fn, err := wal.ParseFileName(name, segSize)
		if err != nil {
			if valid && (kind == wal.KindHistory || !errors.Is(err, wal.ErrInvalidName)) {
				t.Fatalf("ParseFileName(%q, %d): %v", name, segSize, err)
			}
			return
		}
		if !valid || fn.Kind != kind || kind == wal.KindInvalid || fn.Timeline == 0 {
			t.Fatalf("ParseFileName(%q, %d) = %+v (Classify %v)", name, segSize, fn, kind)
		}
		var back string
		switch kind {
		case wal.KindSegment:
			back = fn.Segment().Name(segSize)
		case wal.KindPartial:
			back = fn.Segment().PartialName(segSize)
		case wal.KindHistory:
			back = wal.HistoryFileName(fn.Timeline)
		case wal.KindBackupHistory:
			back = wal.BackupHistoryName(fn.Timeline, fn.BackupStart(segSize), segSize)
		}
		if back != name {
			t.Fatalf("ParseFileName(%q, %d) = %+v, which is named %q", name, segSize, fn, back)
		}
	})
}

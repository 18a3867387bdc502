package overlay

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/fs/fstest"
	"github.com/pgvault/pgvault/fs/inode"
)

func sampleRecords() []record {
	return []record{
		{Kind: recCreate, Parent: nodeRef{Ino: 1, Base: true}, Name: "recovery.signal", Node: nodeRef{Ino: inode.OverlayBase}, Type: KindFile, Mode: 0o600, UID: 26, GID: 26, MTime: 1234567890},
		{Kind: recCreate, Parent: nodeRef{Ino: inode.Hash("base", "pg_wal"), Base: true, Path: "pg_wal"}, Name: "xlogtemp.1", Node: nodeRef{Ino: inode.OverlayBase + 1}, Type: KindSymlink, Mode: 0o777, Target: "../x", MTime: -5},
		{Kind: recRemove, Parent: nodeRef{Ino: inode.OverlayBase + 7}, Name: "a b"},
		{Kind: recRename, Parent: nodeRef{Ino: 1, Base: true}, Name: "backup_label", NewParent: nodeRef{Ino: 1, Base: true}, NewName: "backup_label.old", Flags: 1},
		{Kind: recSetattr, Node: nodeRef{Ino: 9, Base: true, Path: "base/1/16384"}, Valid: attrMode | attrSize | attrMTime, Mode: 0o640, Size: 8192, MTime: 42},
		{Kind: recData, Node: nodeRef{Ino: 9, Base: true, Path: "base/1/16384"}, Size: 307300, BaseLimit: 8192, MTime: 7, Ranges: []blockRange{{0, 1}, {5, 3}, {100, 1}}},
		{Kind: recClone, Node: nodeRef{Ino: inode.OverlayBase + 2}, Timeline: 3, Name: "0000000300000001000000F1", Size: 16 << 20, MTime: 99},
		{Kind: recData, Node: nodeRef{Ino: inode.OverlayBase + 2}, Flags: dataLocal, Size: 16 << 20},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range sampleRecords() {
		t.Run(r.Name+r.NewName, func(t *testing.T) {
			got, err := decodeRecord(encodeRecord(&r))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, r) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, r)
			}
		})
	}
}

func TestDecodeRecordRejects(t *testing.T) {
	good := encodeRecord(&sampleRecords()[0])
	tests := []struct {
		name    string
		payload []byte
	}{
		{"empty", nil},
		{"unknown kind", []byte{99}},
		{"truncated", good[:len(good)-3]},
		{"trailing bytes", append(append([]byte(nil), good...), 0)},
		{"slash in name", encodeRecord(&record{Kind: recRemove, Parent: nodeRef{Ino: 1}, Name: "a/b"})},
		{"dot name", encodeRecord(&record{Kind: recRemove, Parent: nodeRef{Ino: 1}, Name: ".."})},
		{"inode 0", encodeRecord(&record{Kind: recRemove, Parent: nodeRef{Ino: 0}, Name: "x"})},
		{"created inode in the hashed range", encodeRecord(&record{Kind: recCreate, Parent: nodeRef{Ino: 1}, Name: "x", Node: nodeRef{Ino: 5}, Type: KindFile})},
		{"bad node type", encodeRecord(&record{Kind: recCreate, Parent: nodeRef{Ino: 1}, Name: "x", Node: nodeRef{Ino: inode.OverlayBase}, Type: 9})},
		{"base limit above size", encodeRecord(&record{Kind: recData, Node: nodeRef{Ino: 3}, Size: 10, BaseLimit: 11})},
		{"empty range", encodeRecord(&record{Kind: recData, Node: nodeRef{Ino: 3}, Size: 10, Ranges: []blockRange{{1, 0}}})},
		{"clone of a negative size", encodeRecord(&record{Kind: recClone, Node: nodeRef{Ino: inode.OverlayBase}, Timeline: 1, Name: "000000010000000000000001", Size: -1})},
		{"clone into a snapshot file", encodeRecord(&record{Kind: recClone, Node: nodeRef{Ino: 3, Base: true, Path: "x"}, Timeline: 1, Name: "000000010000000000000001", Size: 1})},
		{"clone without a name", encodeRecord(&record{Kind: recClone, Node: nodeRef{Ino: inode.OverlayBase}, Timeline: 1, Size: 1})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeRecord(tt.payload); !errors.Is(err, ErrJournalCorrupt) {
				t.Fatalf("decodeRecord = %v, want ErrJournalCorrupt", err)
			}
		})
	}
}

func TestParseJournalTornTail(t *testing.T) {
	recs := sampleRecords()
	var file []byte
	file = append(file, journalMagic...)
	for i := range recs {
		file = appendFrame(file, encodeRecord(&recs[i]))
	}
	full := len(file)
	tests := []struct {
		name    string
		data    []byte
		records int
		tail    bool
	}{
		{"whole", file, len(recs), false},
		{"torn header", file[:full-len(encodeRecord(&recs[len(recs)-1]))-5], len(recs) - 1, true},
		{"torn payload", file[:full-2], len(recs) - 1, true},
		{"flipped byte in the last frame", flip(file, full-1), len(recs) - 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, good, tail, err := parseJournal(tt.data)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.records || (tail != nil) != tt.tail {
				t.Fatalf("got %d records, tail %v; want %d, tail %v", len(got), tail, tt.records, tt.tail)
			}
			if !tt.tail && good != len(tt.data) {
				t.Fatalf("good = %d, want %d", good, len(tt.data))
			}
		})
	}
	if _, _, _, err := parseJournal([]byte("not a journal")); !errors.Is(err, ErrJournalCorrupt) {
		t.Fatalf("bad magic: %v", err)
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x40
	return c
}

func TestJournalAppendReopen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "journal")
	j, recs, err := openJournal(p)
	if err != nil || len(recs) != 0 {
		t.Fatal(recs, err)
	}
	want := sampleRecords()
	for i := range want {
		if err := j.append(&want[i]); err != nil {
			t.Fatal(err)
		}
	}
	j.close()
	// A torn frame at the end, as a power loss could leave: cut on open.
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte{200, 0, 0, 0, 1, 2})
	f.Close()
	j, got, err := openJournal(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("reopened journal differs")
	}
	extra := record{Kind: recRemove, Parent: nodeRef{Ino: 1, Base: true}, Name: "after"}
	if err := j.append(&extra); err != nil {
		t.Fatal(err)
	}
	j.close()
	_, got, err = openJournal(p)
	if err != nil || len(got) != len(want)+1 || got[len(got)-1].Name != "after" {
		t.Fatalf("after torn tail: %d records, %v", len(got), err)
	}
	// Compaction replaces the file atomically.
	j, _, _ = openJournal(p)
	if err := j.replace(want[:2]); err != nil {
		t.Fatal(err)
	}
	all, err := j.readAll()
	if err != nil || len(all) != 2 {
		t.Fatalf("after replace: %d records, %v", len(all), err)
	}
	j.close()
}

// FuzzDecodeRecord: the decoder of journal bytes must never panic or
// allocate without bound, and what it accepts must encode back to the
// same bytes.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range sampleRecords() {
		f.Add(encodeRecord(&r))
	}
	f.Add([]byte{5, 1, 0, 0, 0, 0, 0, 255, 255, 255, 255, 15})
	f.Fuzz(func(t *testing.T, payload []byte) {
		r, err := decodeRecord(payload)
		if err != nil {
			return
		}
		if again := encodeRecord(&r); !bytes.Equal(again, payload) {
			r2, err := decodeRecord(again)
			if err != nil || !reflect.DeepEqual(r, r2) {
				t.Fatalf("re-encoding changed the record: %+v vs %+v (%v)", r, r2, err)
			}
		}
	})
}

// FuzzParseJournal: whole journal files.
func FuzzParseJournal(f *testing.F) {
	var file []byte
	file = append(file, journalMagic...)
	for _, r := range sampleRecords() {
		file = appendFrame(file, encodeRecord(&r))
	}
	f.Add(file)
	f.Add([]byte(journalMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, good, _, err := parseJournal(data)
		if err != nil {
			return
		}
		if good > len(data) || good < len(journalMagic) {
			t.Fatalf("good prefix %d of %d bytes", good, len(data))
		}
		again, good2, tail, err := parseJournal(data[:good])
		if err != nil || tail != nil || good2 != good || len(again) != len(recs) {
			t.Fatalf("the intact prefix does not parse alone")
		}
	})
}

func TestBitmap(t *testing.T) {
	var b bitmap
	b.setRange(3, 5)
	b.set(64)
	b.set(200)
	if got := b.ranges(); !reflect.DeepEqual(got, []blockRange{{3, 5}, {64, 1}, {200, 1}}) {
		t.Fatalf("ranges = %v", got)
	}
	if b.count() != 7 || !b.has(7) || b.has(8) || b.has(10000) {
		t.Fatal("has/count wrong")
	}
	b.clearFrom(65)
	if got := b.ranges(); !reflect.DeepEqual(got, []blockRange{{3, 5}, {64, 1}}) {
		t.Fatalf("after clearFrom: %v", got)
	}
	if b.allBelow(8) {
		t.Fatal("allBelow(8) with 0..2 missing")
	}
	var full bitmap
	full.setRange(0, 130)
	for _, n := range []int64{0, 1, 63, 64, 65, 128, 130} {
		if !full.allBelow(n) {
			t.Fatalf("allBelow(%d) false", n)
		}
	}
	if full.allBelow(131) {
		t.Fatal("allBelow(131) true")
	}
	var o bitmap
	o.setRange(4, 100)
	if got := b.and(o).ranges(); !reflect.DeepEqual(got, []blockRange{{4, 4}, {64, 1}}) {
		t.Fatalf("and = %v", got)
	}
}

// TestOpenRemovesAtomicTemps: a crash between an atomic write and its
// rename (compaction) leaves a temporary file in the scratch folder; the
// next Open removes it and keeps the journal.
func TestOpenRemovesAtomicTemps(t *testing.T) {
	r, s := fstest.Snapshot(t, fstest.SampleTree())
	scratch := t.TempDir()
	ctx := context.Background()
	ov := openTestOverlay(t, r, s, scratch)
	if err := ov.WriteFile(ctx, "kept", []byte("x"), 0o600, Owner{}); err != nil {
		t.Fatal(err)
	}
	if err := ov.Close(ctx); err != nil { // compacts: an atomic replace
		t.Fatal(err)
	}
	left := filepath.Join(scratch, "."+scratchJournal+".tmp-123")
	if err := os.WriteFile(left, []byte("half a journal"), 0o600); err != nil {
		t.Fatal(err)
	}
	ov = openTestOverlay(t, r, s, scratch)
	defer ov.Close(ctx)
	if fileExists(left) {
		t.Fatal("the leftover temporary file is still there")
	}
	if got := mustRead(t, ov, "kept"); string(got) != "x" {
		t.Fatalf("kept reads %q", got)
	}
	ents, _ := os.ReadDir(scratch)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("temporary file %s in the scratch folder", e.Name())
		}
	}
}

package index

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/pack"
)

func randID(rng *rand.Rand) chunk.ID {
	var id chunk.ID
	for i := range id {
		id[i] = byte(rng.Uint32())
	}
	return id
}

func sample(rng *rand.Rand, nPacks, nEntries int) ([]PackInfo, []Entry) {
	packs := make([]PackInfo, nPacks)
	for i := range packs {
		packs[i] = PackInfo{ID: randID(rng), Size: uint32(1000 + i), Type: pack.DataBlob}
	}
	entries := make([]Entry, nEntries)
	for i := range entries {
		p := packs[rng.IntN(nPacks)]
		entries[i] = Entry{ID: randID(rng), Pack: p.ID, Type: p.Type, Offset: uint32(i * 10), Length: 10, PlainLen: 20}
	}
	return packs, entries
}

func TestEncodeDecodeLookup(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	packs, entries := sample(rng, 5, 1000)
	sup := []chunk.ID{randID(rng)}
	data, err := Encode(sup, packs, append(entries, entries[3])) // a duplicate is dropped
	if err != nil {
		t.Fatal(err)
	}
	tab, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if tab.Len() != len(entries) {
		t.Fatalf("Len = %d, want %d", tab.Len(), len(entries))
	}
	if len(tab.Supersedes()) != 1 || tab.Supersedes()[0] != sup[0] {
		t.Fatalf("supersedes = %v", tab.Supersedes())
	}
	for _, e := range entries {
		got, ok := tab.Lookup(e.ID)
		if !ok || got != e {
			t.Fatalf("Lookup(%s) = %+v, %v; want %+v", e.ID.Short(), got, ok, e)
		}
	}
	if _, ok := tab.Lookup(randID(rng)); ok {
		t.Fatal("found a blob that was never added")
	}
}

func TestEncodeRejectsUnknownPack(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	packs, entries := sample(rng, 2, 3)
	entries[1].Pack = randID(rng)
	if _, err := Encode(nil, packs, entries); err == nil {
		t.Fatal("entry with an unknown pack was encoded")
	}
}

func TestDecodeRejectsDamage(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	packs, entries := sample(rng, 3, 50)
	good, _ := Encode(nil, packs, entries)
	unsorted := bytes.Clone(good)
	// Swap the first two entries' IDs.
	first := len(good) - 50*EntrySize
	a := bytes.Clone(unsorted[first : first+32])
	copy(unsorted[first:first+32], unsorted[first+EntrySize:first+EntrySize+32])
	copy(unsorted[first+EntrySize:], a)
	badPack := bytes.Clone(good)
	badPack[first+32] = 200
	tests := map[string][]byte{
		"empty":          nil,
		"truncated":      good[:len(good)-7],
		"cut in header":  good[:6],
		"bad magic":      append([]byte("XXXX"), good[4:]...),
		"trailing bytes": append(bytes.Clone(good), 0),
		"unsorted":       unsorted,
		"bad pack no":    badPack,
	}
	for name, data := range tests {
		if _, err := Decode(data); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}

func TestMerge(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	var tables []*Table
	want := map[chunk.ID]Entry{}
	for i := 0; i < 4; i++ {
		packs, entries := sample(rng, 3, 200)
		if i > 0 {
			// Share some blobs with the previous table; the first one wins.
			prev := tables[i-1]
			for j := 0; j < 20; j++ {
				e := prev.At(j)
				dup := e
				dup.Pack, dup.Offset = packs[0].ID, 99999
				entries = append(entries, dup)
			}
		}
		data, err := Encode(nil, packs, entries)
		if err != nil {
			t.Fatal(err)
		}
		tab, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		tables = append(tables, tab)
		for j := 0; j < tab.Len(); j++ {
			if _, ok := want[tab.At(j).ID]; !ok {
				want[tab.At(j).ID] = tab.At(j)
			}
		}
	}
	var buf bytes.Buffer
	covers := []chunk.ID{randID(rng), randID(rng)}
	if err := Merge(&buf, covers, tables); err != nil {
		t.Fatal(err)
	}
	merged, err := Decode(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if merged.Len() != len(want) {
		t.Fatalf("merged Len = %d, want %d", merged.Len(), len(want))
	}
	for id, e := range want {
		if got, ok := merged.Lookup(id); !ok || got != e {
			t.Fatalf("merged Lookup(%s) = %+v %v, want %+v", id.Short(), got, ok, e)
		}
	}
	if len(merged.Supersedes()) != 2 {
		t.Fatalf("supersedes = %d", len(merged.Supersedes()))
	}
}

// TestEncodeMergeSameBytes: Encode and Merge share one encoder, so the
// same entries, packs and supersedes list give the same bytes.
func TestEncodeMergeSameBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	table := func(packs []PackInfo, entries []Entry) *Table {
		t.Helper()
		data, err := Encode(nil, packs, entries)
		if err != nil {
			t.Fatal(err)
		}
		tab, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		return tab
	}
	p1, e1 := sample(rng, 3, 100)
	p2, e2 := sample(rng, 2, 50)
	// A blob the first table has too, in another pack: the first wins.
	dup := e1[7]
	dup.Pack, dup.Offset = p2[0].ID, 4242
	// A pack both tables list.
	shared := append(slices.Clone(p2), p1[1])
	tests := []struct {
		name       string
		supersedes []chunk.ID
		tables     []*Table
	}{
		{"one table", nil, []*Table{table(p1, e1)}},
		{"supersedes", []chunk.ID{randID(rng), randID(rng)}, []*Table{table(p1, e1)}},
		{"overlapping blobs", []chunk.ID{randID(rng)}, []*Table{table(p1, e1), table(p2, append(slices.Clone(e2), dup))}},
		{"shared pack", nil, []*Table{table(p1, e1), table(shared, e2)}},
		{"empty table", nil, []*Table{table(p1, nil), table(p2, e2)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var merged bytes.Buffer
			if err := Merge(&merged, tt.supersedes, tt.tables); err != nil {
				t.Fatal(err)
			}
			var packs []PackInfo
			var entries []Entry
			for _, tab := range tt.tables {
				for _, p := range tab.Packs() {
					if !slices.Contains(packs, p) {
						packs = append(packs, p)
					}
				}
				entries = append(entries, entriesOf(tab)...)
			}
			encoded, err := Encode(tt.supersedes, packs, entries)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(merged.Bytes(), encoded) {
				t.Fatalf("Merge wrote %d bytes, Encode %d, and they differ", merged.Len(), len(encoded))
			}
		})
	}
}

// TestTableWriterChecksEntries: the encoder refuses what would not decode.
func TestTableWriterChecksEntries(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	packs, entries := sample(rng, 2, 3)
	slices.SortFunc(entries, func(a, b Entry) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	tests := []struct {
		name     string
		announce int
		add      []Entry
	}{
		{"unsorted", 3, []Entry{entries[1], entries[0], entries[2]}},
		{"duplicate", 3, []Entry{entries[0], entries[0], entries[1]}},
		{"more than announced", 2, entries},
		{"fewer than announced", 4, entries},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newTableWriter(io.Discard, nil, packs, tt.announce)
			for _, e := range tt.add {
				w.add(e)
			}
			if err := w.finish(); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	rng := rand.New(rand.NewPCG(5, 5))
	packs, entries := sample(rng, 2, 4)
	good, _ := Encode([]chunk.ID{randID(rng)}, packs, entries)
	f.Add(good)
	f.Add(good[:20])
	f.Add([]byte("PGVI\x01\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := Decode(data)
		if err != nil {
			return
		}
		// A table that decodes must be fully usable.
		for i := 0; i < tab.Len(); i++ {
			e := tab.At(i)
			if got, ok := tab.Lookup(e.ID); !ok || got != e {
				t.Fatalf("entry %d not found by Lookup", i)
			}
		}
		again, err := Encode(tab.Supersedes(), tab.Packs(), entriesOf(tab))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(again); err != nil {
			t.Fatalf("re-encoded table does not decode: %v", err)
		}
	})
}

func entriesOf(t *Table) []Entry {
	out := make([]Entry, t.Len())
	for i := range out {
		out[i] = t.At(i)
	}
	return out
}

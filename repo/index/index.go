// Package index encodes and searches the tables that map a blob ID to the
// pack and byte range holding it.
//
// A table is a flat byte layout with fixed-width records sorted by blob ID,
// so it can be searched in place: a repository's index objects are decrypted
// once into a local cache folder and memory-mapped, and lookups binary-search
// them without building a map. Memory use is then the page cache's business,
// not the Go heap's: a 1 TB database with 128 KiB chunks has about 8.4
// million entries, 400 MB of tables on disk, and a resident set of only the
// pages lookups touch.
//
// Layout (repository format version 1), all integers little-endian:
//
//	"PGVI" | version u8 | 3 zero bytes
//	supersedes count u32 | count x index ID [32]
//	pack count u32       | count x { pack ID [32] | size u32 | type u8 | 3 zero bytes }
//	entry count u32      | count x { blob ID [32] | pack number u32 | offset u32 | length u32 | plain length u32 }
//
// Entries are sorted by blob ID with no duplicates. "supersedes" lists index
// objects whose content this one includes (written by compaction), so a
// reader that sees both can drop the older ones.
package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/pack"
)

const (
	magic      = "PGVI"
	version    = 1
	headerSize = 8
	packSize   = chunk.IDSize + 4 + 1 + 3
	// EntrySize is the number of bytes one blob costs in a table.
	EntrySize = chunk.IDSize + 4 + 4 + 4 + 4
)

// ErrCorrupt is matched by errors about a damaged table.
var ErrCorrupt = errors.New("index is corrupt")

// PackInfo describes one pack a table refers to.
type PackInfo struct {
	ID   chunk.ID
	Size uint32
	Type pack.BlobType
}

// Entry is one blob's location.
type Entry struct {
	ID       chunk.ID
	Pack     chunk.ID
	Type     pack.BlobType
	Offset   uint32
	Length   uint32
	PlainLen uint32
}

// Table is a decoded, validated index table. It does not copy its bytes:
// they may live in a memory map. A Table is safe for concurrent reads.
type Table struct {
	data       []byte
	supersedes []chunk.ID
	packs      []PackInfo
	entries    []byte // count * EntrySize
}

// Decode validates data and returns a table over it.
func Decode(data []byte) (*Table, error) {
	if len(data) < headerSize || string(data[:4]) != magic {
		return nil, fmt.Errorf("%w: no index header", ErrCorrupt)
	}
	if data[4] != version {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrCorrupt, data[4], version)
	}
	t := &Table{data: data}
	p := data[headerSize:]
	n, p, err := count(p, chunk.IDSize, "supersedes list")
	if err != nil {
		return nil, err
	}
	t.supersedes = make([]chunk.ID, n)
	for i := range t.supersedes {
		copy(t.supersedes[i][:], p[i*chunk.IDSize:])
	}
	p = p[n*chunk.IDSize:]
	n, p, err = count(p, packSize, "pack table")
	if err != nil {
		return nil, err
	}
	t.packs = make([]PackInfo, n)
	for i := range t.packs {
		r := p[i*packSize:]
		copy(t.packs[i].ID[:], r)
		t.packs[i].Size = binary.LittleEndian.Uint32(r[32:])
		t.packs[i].Type = pack.BlobType(r[36])
		if !t.packs[i].Type.Valid() {
			return nil, fmt.Errorf("%w: pack %s has unknown type %d", ErrCorrupt, t.packs[i].ID.Short(), r[36])
		}
	}
	p = p[n*packSize:]
	n, p, err = count(p, EntrySize, "entry table")
	if err != nil {
		return nil, err
	}
	if len(p) != n*EntrySize {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(p)-n*EntrySize)
	}
	t.entries = p
	for i := 0; i < n; i++ {
		r := p[i*EntrySize:]
		if pk := binary.LittleEndian.Uint32(r[32:]); int(pk) >= len(t.packs) {
			return nil, fmt.Errorf("%w: entry %d names pack %d of %d", ErrCorrupt, i, pk, len(t.packs))
		}
		off, ln := binary.LittleEndian.Uint32(r[36:]), binary.LittleEndian.Uint32(r[40:])
		if ln == 0 || uint64(off)+uint64(ln) > pack.MaxSize || binary.LittleEndian.Uint32(r[44:]) > chunk.MaxBlobSize {
			return nil, fmt.Errorf("%w: entry %d has a bad range %d+%d", ErrCorrupt, i, off, ln)
		}
		if i > 0 && bytes.Compare(p[(i-1)*EntrySize:(i-1)*EntrySize+chunk.IDSize], r[:chunk.IDSize]) >= 0 {
			return nil, fmt.Errorf("%w: entries not sorted at %d", ErrCorrupt, i)
		}
	}
	return t, nil
}

// count reads a u32 count and checks that count records of size bytes follow.
func count(p []byte, size int, what string) (int, []byte, error) {
	if len(p) < 4 {
		return 0, nil, fmt.Errorf("%w: truncated before the %s", ErrCorrupt, what)
	}
	n := uint64(binary.LittleEndian.Uint32(p))
	p = p[4:]
	if n*uint64(size) > uint64(len(p)) {
		return 0, nil, fmt.Errorf("%w: %s claims %d records in %d bytes (truncated?)", ErrCorrupt, what, n, len(p))
	}
	return int(n), p, nil
}

// Len is the number of blob entries.
func (t *Table) Len() int { return len(t.entries) / EntrySize }

// Packs lists the packs the table refers to.
func (t *Table) Packs() []PackInfo { return t.packs }

// Supersedes lists the index objects this table includes.
func (t *Table) Supersedes() []chunk.ID { return t.supersedes }

// Bytes returns the encoded table.
func (t *Table) Bytes() []byte { return t.data }

// At returns entry i.
func (t *Table) At(i int) Entry { return t.entry(t.entries[i*EntrySize:]) }

// entry decodes the entry record r (of this table).
func (t *Table) entry(r []byte) Entry {
	var e Entry
	copy(e.ID[:], r)
	pk := t.packs[binary.LittleEndian.Uint32(r[32:])]
	e.Pack, e.Type = pk.ID, pk.Type
	e.Offset = binary.LittleEndian.Uint32(r[36:])
	e.Length = binary.LittleEndian.Uint32(r[40:])
	e.PlainLen = binary.LittleEndian.Uint32(r[44:])
	return e
}

// Lookup finds id by binary search.
func (t *Table) Lookup(id chunk.ID) (Entry, bool) {
	n := t.Len()
	i := sort.Search(n, func(i int) bool {
		return bytes.Compare(t.entries[i*EntrySize:i*EntrySize+chunk.IDSize], id[:]) >= 0
	})
	if i < n && bytes.Equal(t.entries[i*EntrySize:i*EntrySize+chunk.IDSize], id[:]) {
		return t.At(i), true
	}
	return Entry{}, false
}

// Encode builds a table. Entries may come in any order; duplicates of a
// blob ID keep the first. Every entry's pack must be in packs.
func Encode(supersedes []chunk.ID, packs []PackInfo, entries []Entry) ([]byte, error) {
	sorted := slices.Clone(entries)
	slices.SortStableFunc(sorted, func(a, b Entry) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	sorted = slices.CompactFunc(sorted, func(a, b Entry) bool { return a.ID == b.ID })

	var out bytes.Buffer
	out.Grow(headerSize + 12 + len(supersedes)*chunk.IDSize + len(packs)*packSize + len(sorted)*EntrySize)
	w := newTableWriter(&out, supersedes, packs, len(sorted))
	for _, e := range sorted {
		if err := w.add(e); err != nil {
			return nil, err
		}
	}
	if err := w.finish(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

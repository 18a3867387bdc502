package index

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/pgvault/pgvault/chunk"
)

// tableWriter writes a table in the layout of the package doc, streaming,
// for Encode and Merge alike: newTableWriter writes the header, the
// supersedes list and the pack table; add writes the entries, which come
// sorted by blob ID without duplicates, exactly as many as announced;
// finish checks that. Write errors are kept and returned by add and
// finish.
type tableWriter struct {
	w      io.Writer
	packNo map[chunk.ID]uint32
	want   int // entries announced in the header
	n      int // entries written
	last   chunk.ID
	rec    [EntrySize]byte
	err    error
}

// newTableWriter writes the header of a table of entries entries. An
// entry names its pack by position in packs (the last one, should a pack
// be listed twice).
func newTableWriter(w io.Writer, supersedes []chunk.ID, packs []PackInfo, entries int) *tableWriter {
	t := &tableWriter{w: w, packNo: make(map[chunk.ID]uint32, len(packs)), want: entries}
	hdr := make([]byte, 0, headerSize+12+len(supersedes)*chunk.IDSize+len(packs)*packSize)
	hdr = append(hdr, magic...)
	hdr = append(hdr, version, 0, 0, 0)
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(supersedes)))
	for _, s := range supersedes {
		hdr = append(hdr, s[:]...)
	}
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(packs)))
	for i, p := range packs {
		t.packNo[p.ID] = uint32(i)
		hdr = append(hdr, p.ID[:]...)
		hdr = binary.LittleEndian.AppendUint32(hdr, p.Size)
		hdr = append(hdr, byte(p.Type), 0, 0, 0)
	}
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(entries))
	_, t.err = w.Write(hdr)
	return t
}

// add writes the next entry.
func (t *tableWriter) add(e Entry) error {
	if t.err != nil {
		return t.err
	}
	no, ok := t.packNo[e.Pack]
	switch {
	case !ok:
		t.err = fmt.Errorf("encode index: blob %s names pack %s, which is not in the pack table", e.ID.Short(), e.Pack.Short())
	case t.n == t.want:
		t.err = fmt.Errorf("encode index: more than the %d entries announced", t.want)
	case t.n > 0 && bytes.Compare(e.ID[:], t.last[:]) <= 0:
		t.err = fmt.Errorf("encode index: blob %s comes after %s: entries must be sorted, without duplicates", e.ID.Short(), t.last.Short())
	}
	if t.err != nil {
		return t.err
	}
	r := t.rec[:0]
	r = append(r, e.ID[:]...)
	r = binary.LittleEndian.AppendUint32(r, no)
	r = binary.LittleEndian.AppendUint32(r, e.Offset)
	r = binary.LittleEndian.AppendUint32(r, e.Length)
	r = binary.LittleEndian.AppendUint32(r, e.PlainLen)
	if _, err := t.w.Write(r); err != nil {
		t.err = err
		return err
	}
	t.n++
	t.last = e.ID
	return nil
}

// finish reports an error writing the table, or a table with fewer
// entries than its header announced.
func (t *tableWriter) finish() error {
	if t.err == nil && t.n != t.want {
		t.err = fmt.Errorf("encode index: %d entries written, %d announced", t.n, t.want)
	}
	return t.err
}

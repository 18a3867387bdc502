package index

import (
	"bufio"
	"bytes"
	"container/heap"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/pgvault/pgvault/chunk"
)

// Merge writes one table holding every entry of tables (the first table
// that has a blob wins) and the given supersedes list. It streams: memory
// use is the pack table, not the entries.
func Merge(w io.Writer, supersedes []chunk.ID, tables []*Table) error {
	packNo := map[chunk.ID]uint32{}
	var packs []PackInfo
	for _, t := range tables {
		for _, p := range t.packs {
			if _, ok := packNo[p.ID]; !ok {
				packNo[p.ID] = uint32(len(packs))
				packs = append(packs, p)
			}
		}
	}
	n := 0
	mergeEntries(tables, func(*Table, []byte) { n++ })

	bw := bufio.NewWriterSize(w, 1<<20)
	var hdr []byte
	hdr = append(hdr, magic...)
	hdr = append(hdr, version, 0, 0, 0)
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(supersedes)))
	for _, s := range supersedes {
		hdr = append(hdr, s[:]...)
	}
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(packs)))
	for _, p := range packs {
		hdr = append(hdr, p.ID[:]...)
		hdr = binary.LittleEndian.AppendUint32(hdr, p.Size)
		hdr = append(hdr, byte(p.Type), 0, 0, 0)
	}
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(n))
	bw.Write(hdr)
	rec := make([]byte, EntrySize)
	mergeEntries(tables, func(t *Table, r []byte) {
		copy(rec, r)
		old := t.packs[binary.LittleEndian.Uint32(r[32:])].ID
		binary.LittleEndian.PutUint32(rec[32:], packNo[old])
		bw.Write(rec)
	})
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("merge index tables: %w", err)
	}
	return nil
}

// mergeEntries calls fn for each distinct blob ID across tables in ID
// order, with the raw record from the first table (by position) holding it.
func mergeEntries(tables []*Table, fn func(t *Table, rec []byte)) {
	h := &cursorHeap{}
	for i, t := range tables {
		if t.Len() > 0 {
			*h = append(*h, cursor{t: t, order: i})
		}
	}
	heap.Init(h)
	var last []byte
	for h.Len() > 0 {
		c := &(*h)[0]
		rec := c.rec()
		if last == nil || !bytes.Equal(last, rec[:chunk.IDSize]) {
			fn(c.t, rec)
			last = rec[:chunk.IDSize]
		}
		c.pos++
		if c.pos == c.t.Len() {
			heap.Pop(h)
		} else {
			heap.Fix(h, 0)
		}
	}
}

type cursor struct {
	t     *Table
	pos   int
	order int
}

func (c *cursor) rec() []byte { return c.t.entries[c.pos*EntrySize : (c.pos+1)*EntrySize] }

type cursorHeap []cursor

func (h cursorHeap) Len() int { return len(h) }
func (h cursorHeap) Less(i, j int) bool {
	a, b := h[i].rec()[:chunk.IDSize], h[j].rec()[:chunk.IDSize]
	if c := bytes.Compare(a, b); c != 0 {
		return c < 0
	}
	return h[i].order < h[j].order
}
func (h cursorHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)   { *h = append(*h, x.(cursor)) }
func (h *cursorHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

package index

import (
	"bufio"
	"bytes"
	"container/heap"
	"fmt"
	"io"

	"github.com/pgvault/pgvault/chunk"
)

// Merge writes one table holding every entry of tables (the first table
// that has a blob wins) and the given supersedes list; its pack table is
// every table's packs, in order, each once. It streams: memory use is the
// pack table, not the entries.
func Merge(w io.Writer, supersedes []chunk.ID, tables []*Table) error {
	seen := map[chunk.ID]bool{}
	var packs []PackInfo
	for _, t := range tables {
		for _, p := range t.packs {
			if !seen[p.ID] {
				seen[p.ID] = true
				packs = append(packs, p)
			}
		}
	}
	n := 0
	mergeEntries(tables, func(*Table, []byte) { n++ })

	bw := bufio.NewWriterSize(w, 1<<20)
	tw := newTableWriter(bw, supersedes, packs, n)
	mergeEntries(tables, func(t *Table, r []byte) { tw.add(t.entry(r)) })
	err := tw.finish()
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
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

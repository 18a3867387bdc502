package overlay

import "math/bits"

// bitmap is a growable set of block numbers.
type bitmap []uint64

func (b bitmap) has(i int64) bool {
	w := i >> 6
	return w < int64(len(b)) && b[w]&(1<<(uint64(i)&63)) != 0
}

func (b *bitmap) set(i int64) {
	w := int(i >> 6)
	if w >= len(*b) {
		grown := make(bitmap, w+1, max(w+1, 2*len(*b)))
		copy(grown, *b)
		*b = grown
	}
	(*b)[w] |= 1 << (uint64(i) & 63)
}

func (b bitmap) clear(i int64) {
	w := i >> 6
	if w < int64(len(b)) {
		b[w] &^= 1 << (uint64(i) & 63)
	}
}

// setRange sets blocks [first, first+n).
func (b *bitmap) setRange(first, n int64) {
	for i := first; i < first+n; i++ {
		b.set(i)
	}
}

// clearFrom clears every block >= n and drops unused words.
func (b *bitmap) clearFrom(n int64) {
	w := int(n >> 6)
	if w >= len(*b) {
		return
	}
	(*b)[w] &= (1 << (uint64(n) & 63)) - 1
	for i := w + 1; i < len(*b); i++ {
		(*b)[i] = 0
	}
	last := len(*b)
	for last > 0 && (*b)[last-1] == 0 {
		last--
	}
	*b = (*b)[:last]
}

// count returns the number of set blocks.
func (b bitmap) count() int64 {
	var n int
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return int64(n)
}

// firstClear returns the lowest block < n that is not set, or -1. It skips
// full words, so hydration's scan of a 1 GiB file (131072 blocks of 8
// KiB) costs 2048 word tests, not a test per block.
func (b bitmap) firstClear(n int64) int64 {
	for w := int64(0); w<<6 < n; w++ {
		var word uint64
		if w < int64(len(b)) {
			word = b[w]
		}
		if word == ^uint64(0) {
			continue
		}
		if i := w<<6 + int64(bits.TrailingZeros64(^word)); i < n {
			return i
		}
		return -1
	}
	return -1
}

// allBelow reports whether every block < n is set.
func (b bitmap) allBelow(n int64) bool {
	full := n >> 6
	if int64(len(b)) < full {
		return false
	}
	for i := int64(0); i < full; i++ {
		if b[i] != ^uint64(0) {
			return false
		}
	}
	rest := uint64(n) & 63
	if rest == 0 {
		return true
	}
	if full >= int64(len(b)) {
		return false
	}
	mask := uint64(1)<<rest - 1
	return b[full]&mask == mask
}

// empty reports whether no block is set.
func (b bitmap) empty() bool {
	for _, w := range b {
		if w != 0 {
			return false
		}
	}
	return true
}

// blockRange is a run of blocks [First, First+Count).
type blockRange struct {
	First, Count uint64
}

// ranges lists the runs of set blocks in order.
func (b bitmap) ranges() []blockRange {
	var out []blockRange
	var cur blockRange
	in := false
	for w, word := range b {
		if word == 0 {
			if in {
				out = append(out, cur)
				in = false
			}
			continue
		}
		for bit := 0; bit < 64; bit++ {
			i := uint64(w)*64 + uint64(bit)
			if word&(1<<bit) != 0 {
				if !in {
					cur = blockRange{First: i}
					in = true
				}
				cur.Count++
			} else if in {
				out = append(out, cur)
				in = false
			}
		}
	}
	if in {
		out = append(out, cur)
	}
	return out
}

// and returns the blocks set in both.
func (b bitmap) and(o bitmap) bitmap {
	n := min(len(b), len(o))
	out := make(bitmap, n)
	for i := range n {
		out[i] = b[i] & o[i]
	}
	return out
}

package repo

import (
	"encoding/binary"

	"github.com/pgvault/pgvault/chunk"
)

// idSet is a Bloom filter of blob IDs. Prune marks referenced blobs in it:
// a false positive only keeps a garbage blob one more round, a false
// negative cannot happen, and memory stays at 2 bytes per blob however
// large the repository (an exact set would cost 32+ bytes per blob).
// Blob IDs are keyed HMACs, so their bytes are already uniform hashes.
type idSet struct {
	bits []uint64
	m    uint64
}

const bloomHashes = 8

// newIDSet sizes the filter for n IDs at 16 bits each (false positive rate
// about 0.05%).
func newIDSet(n int) *idSet {
	m := uint64(max(n, 1024)) * 16
	return &idSet{bits: make([]uint64, (m+63)/64), m: m}
}

func (s *idSet) positions(id chunk.ID) [bloomHashes]uint64 {
	// Double hashing from two independent 64-bit halves of the ID.
	h1 := binary.LittleEndian.Uint64(id[0:8])
	h2 := binary.LittleEndian.Uint64(id[8:16]) | 1
	var p [bloomHashes]uint64
	for i := range p {
		p[i] = (h1 + uint64(i)*h2) % s.m
	}
	return p
}

func (s *idSet) add(id chunk.ID) {
	for _, p := range s.positions(id) {
		s.bits[p/64] |= 1 << (p % 64)
	}
}

func (s *idSet) has(id chunk.ID) bool {
	for _, p := range s.positions(id) {
		if s.bits[p/64]&(1<<(p%64)) == 0 {
			return false
		}
	}
	return true
}

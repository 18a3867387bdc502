package chunk

import (
	"encoding/binary"
	"math/rand/v2"
)

// TestPages returns n heap pages shaped like pgbench_accounts: a page header,
// line pointers, and tuples of (aid, bid, abalance, 84 blank-padded chars)
// with realistic xmin values. Benchmarks on random bytes would hide what
// compression does to real PostgreSQL data. For tests and benchmarks.
func TestPages(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]byte, n*PageSize)
	aid := uint32(1)
	for p := 0; p < n; p++ {
		page := out[p*PageSize : (p+1)*PageSize]
		const tupleLen, tuples = 121, 61
		binary.LittleEndian.PutUint64(page[0:], rng.Uint64()>>20) // pd_lsn
		binary.LittleEndian.PutUint16(page[8:], uint16(rng.Uint32()))
		lower := 24 + 4*tuples
		upper := PageSize - tuples*128
		binary.LittleEndian.PutUint16(page[12:], uint16(lower))
		binary.LittleEndian.PutUint16(page[14:], uint16(upper))
		binary.LittleEndian.PutUint16(page[16:], PageSize)
		binary.LittleEndian.PutUint16(page[18:], PageSize|4)
		off := PageSize
		for t := 0; t < tuples; t++ {
			off -= 128
			lp := uint32(off) | 1<<15 | tupleLen<<17
			binary.LittleEndian.PutUint32(page[24+4*t:], lp)
			tup := page[off : off+tupleLen]
			binary.LittleEndian.PutUint32(tup[0:], 700+uint32(rng.IntN(50))) // xmin
			binary.LittleEndian.PutUint32(tup[12:], uint32(p))               // ctid block
			binary.LittleEndian.PutUint16(tup[16:], uint16(t+1))
			binary.LittleEndian.PutUint16(tup[18:], 4)
			binary.LittleEndian.PutUint16(tup[20:], 0x0902)
			tup[22] = 24
			binary.LittleEndian.PutUint32(tup[24:], aid)
			binary.LittleEndian.PutUint32(tup[28:], 1+aid/100000)
			if rng.IntN(10) == 0 {
				binary.LittleEndian.PutUint32(tup[32:], uint32(rng.IntN(10000)))
			}
			tup[36] = 84<<1 | 1
			for i := 37; i < tupleLen; i++ {
				tup[i] = ' '
			}
			aid++
		}
	}
	return out
}

package backup

import (
	"encoding/binary"

	"github.com/jackc/pglogrepl"
)

// Data page checksums as PostgreSQL computes them (checksum_impl.h, FNV-1a
// variant over 32 interleaved lanes), so that a base backup can report the
// same corrupt blocks the server's own BASE_BACKUP would.

// PageSize is PostgreSQL's block size; pgvault supports only the default.
const PageSize = 8192

const (
	checksumLanes = 32
	checksumRow   = checksumLanes * 4 // bytes consumed by one round over every lane
	fnvPrime      = 16777619

	// Page header fields. PostgreSQL writes pages in the server's byte
	// order; little-endian (x86-64, arm64) is assumed throughout.
	pdLSNHi    = 0
	pdLSNLo    = 4
	pdChecksum = 8
	pdUpper    = 14
)

// checksumBaseOffsets start each lane in a different state; they are part of
// PostgreSQL's on-disk format and must never change.
var checksumBaseOffsets = [checksumLanes]uint32{
	0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A,
	0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
	0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA,
	0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
	0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE,
	0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
	0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E,
	0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
}

func checksumMix(sum, v uint32) uint32 {
	t := sum ^ v
	return t*fnvPrime ^ t>>17
}

// PageChecksum returns PostgreSQL's checksum of one 8 KiB page at block number blkno
// (block number within the relation: segment number * 131072 + block within the segment file).
// It does not modify page.
func PageChecksum(p *[PageSize]byte, blkno uint32) uint16 {

	// The stored checksum cannot be part of its own input. PostgreSQL zeroes
	// pd_checksum in place for the duration; masking it out of the first row
	// gives the same sums without writing to the caller's buffer, so pages
	// can be checked while other goroutines read them.
	var sums [checksumLanes]uint32
	for j := range sums {
		v := binary.LittleEndian.Uint32(p[4*j:])
		if 4*j == pdChecksum {
			v &^= 0xFFFF
		}
		sums[j] = checksumMix(checksumBaseOffsets[j], v)
	}

	// Walking four lanes down the page at a time keeps their sums in
	// registers and gives the CPU four independent multiply chains to
	// overlap. Going row by row across all 32 lanes keeps every sum in
	// memory and was a third slower; eight lanes at a time spill to the
	// stack on amd64 and were slower too.
	for j := 0; j < checksumLanes; j += 4 {
		s0, s1, s2, s3 := sums[j], sums[j+1], sums[j+2], sums[j+3]
		for row := checksumRow; row < PageSize; row += checksumRow {
			w := (*[16]byte)(p[row+4*j:])
			s0 = checksumMix(s0, binary.LittleEndian.Uint32(w[0:]))
			s1 = checksumMix(s1, binary.LittleEndian.Uint32(w[4:]))
			s2 = checksumMix(s2, binary.LittleEndian.Uint32(w[8:]))
			s3 = checksumMix(s3, binary.LittleEndian.Uint32(w[12:]))
		}
		sums[j], sums[j+1], sums[j+2], sums[j+3] = s0, s1, s2, s3
	}

	var sum uint32
	for _, s := range sums {
		// Two rounds of zeros let the last row's high bits reach the low
		// bits that survive the reduction to 16 bits.
		s = checksumMix(s, 0)
		s = checksumMix(s, 0)
		sum ^= s
	}
	// The block number makes a page copied to the wrong place fail; the +1
	// keeps the result from being 0, as in PostgreSQL.
	sum ^= blkno
	return uint16(sum%65535 + 1)
}

// badPages returns the block numbers of the pages in data (whole 8 KiB pages, the first at block
// firstBlock) whose stored checksum does not match, as PostgreSQL's base backup checks them:
// new pages (pd_upper == 0) and pages whose LSN is at or after startLSN (written during the backup,
// which WAL replay restores) are not checked. A trailing partial page is ignored (the caller reports it).
//
// Block numbers wrap around past 2^32-1, as they do in PostgreSQL; no relation is that large.
func badPages(data []byte, firstBlock uint32, startLSN pglogrepl.LSN) []uint32 {
	var bad []uint32
	blkno := firstBlock
	for off := 0; off+PageSize <= len(data); off += PageSize {
		page := data[off : off+PageSize]
		if pageIsChecked(page, startLSN) &&
			PageChecksum((*[PageSize]byte)(page), blkno) != binary.LittleEndian.Uint16(page[pdChecksum:]) {
			bad = append(bad, blkno)
		}
		blkno++
	}
	return bad
}

// pageIsChecked reports whether a page's checksum is expected to be valid.
// A new page has never been written by PostgreSQL and carries no checksum. A
// page at or past the backup's start LSN may be torn by a concurrent write;
// its full-page image in the WAL covers it.
func pageIsChecked(page []byte, startLSN pglogrepl.LSN) bool {
	if binary.LittleEndian.Uint16(page[pdUpper:]) == 0 {
		return false
	}
	lsn := uint64(binary.LittleEndian.Uint32(page[pdLSNHi:]))<<32 | uint64(binary.LittleEndian.Uint32(page[pdLSNLo:]))
	return pglogrepl.LSN(lsn) < startLSN
}

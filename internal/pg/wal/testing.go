package wal

import "github.com/jackc/pglogrepl"

// FakeSegment builds, for tests, a complete segment of segSize bytes for
// the segment on timeline tli that holds lsn: the page headers a PostgreSQL
// 15 server with system identifier sysID writes (a long header on the first
// page, short ones after), and zeros elsewhere. ValidateSegment accepts it;
// it holds no WAL records, so PostgreSQL cannot replay it. It panics on an
// invalid segSize.
func FakeSegment(tli uint32, lsn pglogrepl.LSN, segSize uint64, sysID uint64) []byte {
	start := SegmentStart(lsn, segSize)
	data := make([]byte, segSize)
	for off := uint64(0); off < segSize; off += PageSize {
		h := PageHeader{
			Magic:    0xD110,
			Info:     XLPBkpRemovable,
			Timeline: tli,
			PageAddr: start + pglogrepl.LSN(off),
		}
		if off == 0 {
			h.Info |= XLPLongHeader
			h.SystemID, h.SegSize, h.BlockSize = sysID, uint32(segSize), PageSize
		}
		_, _ = h.AppendBinary(data[off:off])
	}
	return data
}

package stream_test

import (
	"encoding/binary"
	"testing"

	"github.com/jackc/pglogrepl"
)

// FuzzParseReplicationMessage feeds arbitrary CopyData payloads to the
// parsers the receiver uses for START_REPLICATION messages (pglogrepl's
// XLogData and keepalive decoders): a server or a man in the middle may
// send anything, and a panic would kill the streamer.
func FuzzParseReplicationMessage(f *testing.F) {
	x := make([]byte, 1+24+5)
	x[0] = pglogrepl.XLogDataByteID
	binary.BigEndian.PutUint64(x[1:], 0x3000000)
	binary.BigEndian.PutUint64(x[9:], 0x3000005)
	copy(x[25:], "hello")
	f.Add(x)
	k := make([]byte, 1+17)
	k[0] = pglogrepl.PrimaryKeepaliveMessageByteID
	binary.BigEndian.PutUint64(k[1:], 0x3000005)
	k[17] = 1
	f.Add(k)
	f.Add([]byte{pglogrepl.XLogDataByteID})
	f.Add([]byte{pglogrepl.PrimaryKeepaliveMessageByteID, 1, 2})
	f.Fuzz(func(t *testing.T, msg []byte) {
		if len(msg) == 0 {
			return
		}
		switch msg[0] {
		case pglogrepl.XLogDataByteID:
			xl, err := pglogrepl.ParseXLogData(msg[1:])
			if err == nil && len(xl.WALData) != len(msg)-25 {
				t.Fatalf("XLogData of %d bytes carries %d WAL bytes", len(msg), len(xl.WALData))
			}
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			_, _ = pglogrepl.ParsePrimaryKeepaliveMessage(msg[1:])
		}
	})
}

package stream

import (
	"bytes"
	"context"
	"log/slog"
	"testing"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo/repotest"
)

// TestFlusherKeepsALongerStoredPartial: a streamer that failed over to a
// standby may get less of the current segment than the old primary sent;
// its first partial must not replace the stored longer copy it is a
// prefix of, but does replace a copy of other content, and its partials
// replace the stored one once they are longer.
func TestFlusherKeepsALongerStoredPartial(t *testing.T) {
	const segSize = 1 << 20
	seg := wal.Segment{Timeline: 1, No: 3}
	name := seg.Name(segSize) + ".partial"
	wal := func(n int, fill byte) []byte { return bytes.Repeat([]byte{fill}, n) }
	for _, tc := range []struct {
		test   string
		stored []byte
		write  [][]byte // partials written one after the other
		want   []byte
	}{
		{"shorter prefix keeps the stored copy", wal(3000, 7), [][]byte{wal(2000, 7)}, wal(3000, 7)},
		{"then a longer one replaces it", wal(3000, 7), [][]byte{wal(2000, 7), wal(4000, 7)}, wal(4000, 7)},
		{"other content replaces it", wal(3000, 7), [][]byte{wal(2000, 9)}, wal(2000, 9)},
		{"nothing stored", nil, [][]byte{wal(2000, 7)}, wal(2000, 7)},
	} {
		t.Run(tc.test, func(t *testing.T) {
			ctx := context.Background()
			r, _ := repotest.New(t)
			if tc.stored != nil {
				if _, err := r.SaveWAL(ctx, 1, name, tc.stored, true); err != nil {
					t.Fatal(err)
				}
			}
			f := newFlusher(r, 1, segSize, slog.New(slog.DiscardHandler))
			for _, data := range tc.write {
				if err := f.write(ctx, &flushJob{segNo: seg.No, data: data}); err != nil {
					t.Fatal(err)
				}
			}
			got, _, err := r.LoadWAL(ctx, 1, name)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("stored partial: %d bytes of %d, want %d bytes of %d", len(got), got[0], len(tc.want), tc.want[0])
			}
		})
	}
}

package backup

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/repotest"
)

// A standalone local backup stores the segments from start to stop out of
// pg_wal, and refuses a segment the server recycled or removed.
func TestAddLocalWAL(t *testing.T) {
	const segSize = 1 << 20
	segment := func(tli uint32, addr pglogrepl.LSN) []byte {
		h := wal.PageHeader{Magic: 0xD110, Info: wal.XLPLongHeader, Timeline: tli, PageAddr: addr, SystemID: 7, SegSize: segSize, BlockSize: 8192}
		b, _ := h.AppendBinary(nil)
		return append(b, make([]byte, segSize-len(b))...)
	}
	start, stop := pglogrepl.LSN(2*segSize+40), pglogrepl.LSN(4*segSize) // segments 2 and 3
	for _, tt := range []struct {
		name  string
		files map[pglogrepl.LSN]pglogrepl.LSN // segment start -> the address its first page names
		want  string                          // "" or part of the error
	}{
		{"both segments", map[pglogrepl.LSN]pglogrepl.LSN{2 * segSize: 2 * segSize, 3 * segSize: 3 * segSize}, ""},
		{"the second recycled", map[pglogrepl.LSN]pglogrepl.LSN{2 * segSize: 2 * segSize, 3 * segSize: 1 * segSize}, "recycled"},
		{"the second removed", map[pglogrepl.LSN]pglogrepl.LSN{2 * segSize: 2 * segSize}, "no such file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			os.Mkdir(filepath.Join(dataDir, "pg_wal"), 0o700)
			for seg, addr := range tt.files {
				os.WriteFile(filepath.Join(dataDir, "pg_wal", wal.SegmentName(1, seg, segSize)), segment(1, addr), 0o600)
			}
			r, _ := repotest.New(t)
			ctx := context.Background()
			in := &ingest{w: r.NewSnapshotWriter(ctx), r: r, info: &Info{WALSegmentSize: segSize, StartTime: time.Unix(1e9, 0)}, t0: time.Now()}
			in.w.AddDir("", in.owner)
			in.w.AddDir("pg_wal", in.owner)
			err := in.addLocalWAL(ctx, &localSource{dataDir: dataDir}, 1, start, stop)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				s, err := in.w.Commit(ctx, repo.SnapshotInfo{Kind: "test"})
				if err != nil {
					t.Fatal(err)
				}
				for _, seg := range []pglogrepl.LSN{2 * segSize, 3 * segSize} {
					if _, err := r.Lookup(ctx, s, "pg_wal/"+wal.SegmentName(1, seg, segSize)); err != nil {
						t.Fatalf("segment at %s not stored: %v", seg, err)
					}
				}
				return
			}
			in.w.Abort()
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "wal_keep_size") {
				t.Fatalf("error %v, want one saying %q and the fix", err, tt.want)
			}
		})
	}
}

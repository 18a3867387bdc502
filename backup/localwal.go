package backup

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
)

// addLocalWAL stores in pg_wal the WAL segments a standalone local backup
// needs, from the one holding start to the one ending at stop, read from
// the server's own pg_wal right after pg_backup_stop (pgBackRest's
// archive-copy, without waiting for an archive). pg_backup_stop switched
// to a new segment on a primary, so the last one is complete. A segment
// already recycled (its first page names another place in the WAL) fails
// the backup with the fix, rather than store WAL that does not replay.
func (in *ingest) addLocalWAL(ctx context.Context, src *localSource, tli uint32, start, stop pglogrepl.LSN) error {
	segSize := in.info.SegmentSize()
	walDir := filepath.Join(src.dataDir, "pg_wal")
	for no := wal.SegmentNo(start, segSize); no <= wal.EndSegmentNo(stop, segSize); no++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		segStart := pglogrepl.LSN(no * segSize)
		name := wal.SegmentName(tli, segStart, segSize)
		data, err := os.ReadFile(filepath.Join(walDir, name))
		if err != nil {
			return fmt.Errorf("standalone backup: WAL segment %s of the backup: %w (raise wal_keep_size, or take it with --method stream)", name, err)
		}
		h, err := wal.ParsePageHeader(data)
		if err == nil && (h.PageAddr != segStart || h.Timeline != tli) {
			err = fmt.Errorf("its first page is for %s on timeline %d: the server recycled it", h.PageAddr, h.Timeline)
		}
		if err != nil {
			return fmt.Errorf("standalone backup: WAL segment %s of the backup: %w (raise wal_keep_size, or take it with --method stream)", name, err)
		}
		info, err := os.Stat(filepath.Join(walDir, name))
		if err != nil {
			return err
		}
		meta := nodeMeta(info)
		if _, err := in.w.AddFile("pg_wal/"+name, meta, bytes.NewReader(data), SplitFor("pg_wal/"+name)); err != nil {
			return err
		}
	}
	return nil
}

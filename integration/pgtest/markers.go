package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// MarkerTable is the table of marker rows, in database postgres.
const MarkerTable = "pgvault_markers"

// Marker is one committed row of MarkerTable, with where and when it
// committed: point-in-time recovery tests restore to a marker and check
// which markers survived.
type Marker struct {
	ID   int64
	Note string
	// CommittedAt is the database clock read right after the commit:
	// not before the commit record's timestamp, and before that of any
	// marker inserted later. So recovery_target_time = CommittedAt
	// (inclusive, the default) keeps this marker and drops later ones.
	// (The table's committed_at column is the insert time, a little
	// earlier.)
	CommittedAt time.Time
	// LSN is pg_current_wal_lsn() read right after the commit, in text
	// form: past the commit record (synchronous_commit on, the default),
	// so recovery_target_lsn = LSN keeps this marker and drops markers
	// inserted later.
	LSN string
}

// CreateMarkers creates MarkerTable(id serial primary key, note text,
// committed_at timestamptz default clock_timestamp()).
func (c *Cluster) CreateMarkers(t testing.TB) {
	t.Helper()
	c.Exec(t, `CREATE TABLE `+MarkerTable+` (
		id serial PRIMARY KEY,
		note text,
		committed_at timestamptz DEFAULT clock_timestamp())`)
}

// InsertMarker inserts a marker row in its own transaction and returns it
// once committed.
func (c *Cluster) InsertMarker(t testing.TB, note string) Marker {
	t.Helper()
	m := Marker{Note: note}
	c.withConn(t, "insert marker "+note, func(ctx context.Context, conn *pgx.Conn) error {
		err := conn.QueryRow(ctx, `INSERT INTO `+MarkerTable+` (note) VALUES ($1) RETURNING id`, note).Scan(&m.ID)
		if err != nil {
			return err
		}
		return conn.QueryRow(ctx, `SELECT clock_timestamp(), pg_current_wal_lsn()::text`).Scan(&m.CommittedAt, &m.LSN)
	})
	return m
}

// CountMarkers returns the number of marker rows.
func (c *Cluster) CountMarkers(t testing.TB) int64 {
	t.Helper()
	return c.QueryInt(t, `SELECT count(*) FROM `+MarkerTable)
}

// MarkerIDs returns the IDs of the marker rows, ascending.
func (c *Cluster) MarkerIDs(t testing.TB) []int64 {
	t.Helper()
	var ids []int64
	c.withConn(t, "list markers", func(ctx context.Context, conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, `SELECT id FROM `+MarkerTable+` ORDER BY id`)
		if err != nil {
			return err
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		return err
	})
	return ids
}

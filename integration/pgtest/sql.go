package pgtest

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// queryTimeout bounds one SQL helper call.
const queryTimeout = 5 * time.Minute

// Conn opens a pgx connection to database dbname, closed when the test
// ends.
func (c *Cluster) Conn(t testing.TB, dbname string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.ConnString(dbname))
	if err != nil {
		t.Fatalf("pgtest: connect to database %s on port %d: %v", dbname, c.port, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn
}

// withConn runs f on a new connection to database postgres.
func (c *Cluster) withConn(t testing.TB, what string, f func(ctx context.Context, conn *pgx.Conn) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		t.Fatalf("pgtest: %s: connect to port %d: %v", what, c.port, err)
	}
	defer conn.Close(context.Background())
	if err := f(ctx, conn); err != nil {
		t.Fatalf("pgtest: %s: %v", what, err)
	}
}

// Exec runs a statement in database postgres, in its own transaction.
// Without args several statements may be given, separated by semicolons.
func (c *Cluster) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	c.withConn(t, "exec "+abbrev(sql), func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, sql, args...)
		return err
	})
}

// QueryInt runs a query in database postgres that returns one row of one
// integer column (NULL is an error).
func (c *Cluster) QueryInt(t testing.TB, sql string, args ...any) int64 {
	t.Helper()
	var v int64
	c.withConn(t, "query "+abbrev(sql), func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, sql, args...).Scan(&v)
	})
	return v
}

// QueryString runs a query in database postgres that returns one row of one
// column (NULL is an error), and returns the value in PostgreSQL's text
// form, whatever its type (e.g. '0/3000060' for a pg_lsn, 't' for true).
func (c *Cluster) QueryString(t testing.TB, sql string, args ...any) string {
	t.Helper()
	var v string
	c.withConn(t, "query "+abbrev(sql), func(ctx context.Context, conn *pgx.Conn) error {
		// The simple protocol (or text results) gives every type in text form.
		args = append([]any{pgx.QueryResultFormats{pgx.TextFormatCode}}, args...)
		return conn.QueryRow(ctx, sql, args...).Scan(&v)
	})
	return v
}

// Checkpoint runs CHECKPOINT.
func (c *Cluster) Checkpoint(t testing.TB) {
	t.Helper()
	c.Exec(t, "CHECKPOINT")
}

// SwitchWAL runs pg_switch_wal() and returns its result: the LSN just past
// the switch record, whose segment is now complete (and archivable).
func (c *Cluster) SwitchWAL(t testing.TB) string {
	t.Helper()
	return c.QueryString(t, "SELECT pg_switch_wal()")
}

// CurrentLSN returns pg_current_wal_lsn() (primary only).
func (c *Cluster) CurrentLSN(t testing.TB) string {
	t.Helper()
	return c.QueryString(t, "SELECT pg_current_wal_lsn()")
}

// SystemIdentifier returns the cluster's system identifier (the one
// IDENTIFY_SYSTEM and pg_controldata report).
func (c *Cluster) SystemIdentifier(t testing.TB) uint64 {
	t.Helper()
	s := c.QueryString(t, "SELECT system_identifier FROM pg_control_system()")
	id, err := strconv.ParseInt(s, 10, 64) // a bigint: the uint64 as signed
	if err != nil {
		t.Fatalf("pgtest: system identifier %q: %v", s, err)
	}
	return uint64(id)
}

// WaitReady waits (up to 120 s) until the server accepts connections and
// queries, e.g. a standby reaching consistency. It fails at once with the
// server log if the server has exited.
func (c *Cluster) WaitReady(t testing.TB) {
	t.Helper()
	c.waitFor(t, "accept queries", func(ctx context.Context, conn *pgx.Conn) (bool, error) {
		return true, nil
	})
}

// WaitRecoveryDone waits (up to 120 s) until pg_is_in_recovery() is false:
// recovery has ended (target reached and promoted, or promoted by Promote).
func (c *Cluster) WaitRecoveryDone(t testing.TB) {
	t.Helper()
	c.waitFor(t, "finish recovery", func(ctx context.Context, conn *pgx.Conn) (bool, error) {
		var in bool
		err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&in)
		return !in, err
	})
}

func (c *Cluster) waitFor(t testing.TB, what string, done func(context.Context, *pgx.Conn) (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		if !c.running() {
			t.Fatalf("pgtest: waiting for the server on %s to %s: it is not running\nlast %d lines of %s:\n%s",
				c.dataDir, what, logTailLines, c.logFile, c.logTail())
		}
		ok, err := c.try(done)
		if ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("pgtest: the server on %s did not %s within %v (last error: %v)\nlast %d lines of %s:\n%s",
				c.dataDir, what, readyTimeout, last, logTailLines, c.logFile, c.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Cluster) try(f func(context.Context, *pgx.Conn) (bool, error)) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	if err := conn.Ping(ctx); err != nil {
		return false, err
	}
	return f(ctx, conn)
}

// abbrev shortens SQL for error messages.
func abbrev(sql string) string {
	if len(sql) > 60 {
		return fmt.Sprintf("%q...", sql[:60])
	}
	return fmt.Sprintf("%q", sql)
}

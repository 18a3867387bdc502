// Package pgtest runs throwaway PostgreSQL 15 clusters for pgvault's
// integration tests.
//
// Start creates a new cluster (initdb, data checksums on) and starts it on a
// free port of 127.0.0.1; StartOn starts PostgreSQL on an existing data
// directory, such as one a restore test has just written. Either way the
// server is stopped (pg_ctl stop -m immediate) and the harness's folders are
// removed when the test ends. The cluster is configured for physical
// replication (wal_level=replica, 10 WAL senders, 10 slots, a trust
// replication line in pg_hba.conf) and keeps fsync on.
//
// # Users and folders
//
// Tests run as root and initdb, pg_ctl and postgres refuse root, so the
// server programs run as the postgres OS user: RunAsPostgres builds such a
// command, switching user with SysProcAttr.Credential (no sudo). Every folder
// the server uses (data, unix socket, log, tablespaces) is owned by postgres
// and lies under a 0755 folder in os.TempDir(). t.TempDir() is not usable for
// these (it is root-owned with mode 0700): use TempDir and
// Cluster.TablespaceDir instead.
//
// Clients (pgbench, pgx connections, psql) run as root and connect over TCP
// to 127.0.0.1 as the postgres role; initdb -A trust needs no password.
//
// A test process killed before its cleanups ran (go test -timeout, ^C)
// leaves its server running, as pg_ctl detaches it: the next cluster or
// TempDir any test process creates stops such servers and removes their
// folders (os.TempDir()/pgvault-pgtest-<pid>-*, where no process <pid>
// exists any more).
//
// # Failures
//
// Every helper takes the test's testing.TB and ends the test with t.Fatalf
// on error, naming what it was doing; a server that fails to start reports
// the last 30 lines of its log. Call helpers from the test's own goroutine.
// SQL helpers open a connection per call, so they may be used across
// restarts; lifecycle methods (Start, Stop, Promote, ...) must not run
// concurrently with each other.
//
// PostgreSQL missing is a failure with the fix (`make deps`), never a skip.
package pgtest

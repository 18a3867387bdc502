package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// pgTarget describes a connection without its secrets, for messages.
func pgTarget(cfg *pgconn.Config) string {
	host := cfg.Host
	if strings.HasPrefix(host, "/") {
		host = "socket " + host
	}
	return fmt.Sprintf("%s port %d as user %q", host, cfg.Port, cfg.User)
}

// connectReplication opens a physical replication connection using --pg
// (a conninfo string or URL) and the standard PG* environment variables.
// The returned config (without secrets in messages) lets later errors on
// the connection be explained with explainPG.
func (e *env) connectReplication(ctx context.Context) (*pgconn.PgConn, *pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(e.c.String("pg"))
	if err != nil {
		return nil, nil, usagef("--pg: %v", redact(err.Error()))
	}
	cfg.RuntimeParams["replication"] = "true"
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "pgvault"
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, nil, explainPG(err, cfg)
	}
	return conn, cfg, nil
}

// redact removes password=... from a message that may echo a conninfo.
func redact(s string) string {
	fields := strings.Fields(s)
	for i, f := range fields {
		if k, _, ok := strings.Cut(f, "="); ok && strings.EqualFold(k, "password") {
			fields[i] = "password=REDACTED"
		}
	}
	s = strings.Join(fields, " ")
	// URL form: postgres://user:secret@host
	if i := strings.Index(s, "://"); i >= 0 {
		rest := s[i+3:]
		if at := strings.Index(rest, "@"); at >= 0 {
			if colon := strings.Index(rest[:at], ":"); colon >= 0 {
				s = s[:i+3] + rest[:colon] + ":REDACTED" + rest[at:]
			}
		}
	}
	return s
}

// explainPG turns a connection or replication error into one line that
// says what is wrong and what to change.
func explainPG(err error, cfg *pgconn.Config) error {
	target := pgTarget(cfg)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "28P01":
			return fmt.Errorf("PostgreSQL at %s rejected the password: check PGPASSWORD, ~/.pgpass or password= in --pg", target)
		case pgErr.Code == "28000" && strings.Contains(pgErr.Message, "pg_hba.conf"):
			return fmt.Errorf("PostgreSQL at %s refused the replication connection: %s; add a line such as `host replication %s <this host>/32 scram-sha-256` to pg_hba.conf and reload", target, pgErr.Message, cfg.User)
		case pgErr.Code == "42501" || strings.Contains(pgErr.Message, "replication role"):
			return fmt.Errorf("role %q may not start replication (PostgreSQL at %s: %s): run `ALTER ROLE %s REPLICATION;` or use a role that has it", cfg.User, target, pgErr.Message, quoteIdent(cfg.User))
		case pgErr.Code == "53300" && strings.Contains(pgErr.Message, "max_wal_senders"):
			return fmt.Errorf("PostgreSQL at %s has no free WAL sender (%s): raise max_wal_senders in postgresql.conf and restart PostgreSQL, or stop another replication client", target, pgErr.Message)
		case pgErr.Code == "53300":
			return fmt.Errorf("PostgreSQL at %s has no free connection slot (%s): raise max_connections or close idle sessions", target, pgErr.Message)
		case strings.Contains(pgErr.Message, "WAL level not sufficient") || strings.Contains(pgErr.Message, "wal_level"):
			return fmt.Errorf("PostgreSQL at %s: %s: set wal_level = replica in postgresql.conf and restart PostgreSQL", target, pgErr.Message)
		case pgErr.Code == "57P03":
			return fmt.Errorf("PostgreSQL at %s is starting up or shutting down (%s): retry when it accepts connections", target, pgErr.Message)
		}
		return fmt.Errorf("PostgreSQL at %s: %s (SQLSTATE %s)", target, pgErr.Message, pgErr.Code)
	}
	var opErr *net.OpError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot reach PostgreSQL at %s: connection refused; is it running and listening there? check --pg or PGHOST/PGPORT", target)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("cannot reach PostgreSQL at %s: timed out; check the host, port and firewalls", target)
	case errors.As(err, &opErr):
		return fmt.Errorf("cannot reach PostgreSQL at %s: %v", target, opErr.Err)
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("cannot reach PostgreSQL at %s: no socket there; is it running? check --pg or PGHOST", target)
	}
	return fmt.Errorf("PostgreSQL at %s: %s", target, redact(err.Error()))
}

func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

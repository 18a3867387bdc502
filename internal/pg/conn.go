package pg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgvault/pgvault/internal/redact"
)

// ErrBadConninfo is matched by an error about the form of a connection
// string (a usage mistake, not a connection failure).
var ErrBadConninfo = errors.New("not a valid PostgreSQL connection string")

// ParseConfig parses a libpq connection string (keyword/value or URL; the
// PG* environment variables fill in the rest). Its error never holds the
// password, whatever the spelling: pgconn's own message quotes the string
// and hides only some spellings.
func ParseConfig(conninfo string) (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(conninfo)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrBadConninfo, redact.Message(err.Error(), conninfo))
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	return cfg, nil
}

// Replication returns a copy of cfg for a physical replication connection
// with the given application_name (kept when cfg already sets one and
// name is "").
func Replication(cfg *pgconn.Config, name string) *pgconn.Config {
	c := cfg.Copy()
	if c.RuntimeParams == nil {
		c.RuntimeParams = map[string]string{}
	}
	c.RuntimeParams["replication"] = "true"
	if name != "" {
		c.RuntimeParams["application_name"] = name
	} else if c.RuntimeParams["application_name"] == "" {
		c.RuntimeParams["application_name"] = "pgvault"
	}
	return c
}

// Connect opens a connection; its error is explained (see Explain).
func Connect(ctx context.Context, cfg *pgconn.Config) (*pgconn.PgConn, error) {
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, Explain(err, cfg)
	}
	return conn, nil
}

// Target describes a connection without its secrets, for messages.
func Target(cfg *pgconn.Config) string {
	host := cfg.Host
	if strings.HasPrefix(host, "/") {
		host = "socket " + host
	}
	return fmt.Sprintf("%s port %d as user %q", host, cfg.Port, cfg.User)
}

// Failure is a PostgreSQL error explained on one line. It still unwraps
// to its cause, so callers can tell a failure that reconnecting cannot
// fix (a rejected password) from one it can (errors.As to
// *pgconn.PgError, or Kind).
type Failure struct {
	msg string
	err error
}

func (e *Failure) Error() string { return e.msg }
func (e *Failure) Unwrap() error { return e.err }

// Explain turns a connection or replication error into one line that says
// what is wrong and what to change. An error it already explained is
// returned as it is.
func Explain(err error, cfg *pgconn.Config) error {
	if err == nil {
		return nil
	}
	var done *Failure
	if errors.As(err, &done) {
		return err
	}
	return &Failure{msg: explain(err, cfg), err: err}
}

func explain(err error, cfg *pgconn.Config) string {
	target := Target(cfg)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "28P01":
			return fmt.Sprintf("PostgreSQL at %s rejected the password: check PGPASSWORD, ~/.pgpass or password= in --pg", target)
		case pgErr.Code == "28000" && strings.Contains(pgErr.Message, "pg_hba.conf"):
			return fmt.Sprintf("PostgreSQL at %s refused the replication connection: %s; add a line such as `host replication %s <this host>/32 scram-sha-256` to pg_hba.conf and reload", target, pgErr.Message, cfg.User)
		case pgErr.Code == "42501" || strings.Contains(pgErr.Message, "replication role"):
			return fmt.Sprintf("role %q may not start replication (PostgreSQL at %s: %s): run `ALTER ROLE %s REPLICATION;` or use a role that has it", cfg.User, target, pgErr.Message, QuoteIdent(cfg.User))
		case pgErr.Code == "53300" && strings.Contains(pgErr.Message, "max_wal_senders"):
			return fmt.Sprintf("PostgreSQL at %s has no free WAL sender (%s): raise max_wal_senders in postgresql.conf and restart PostgreSQL, or stop another replication client", target, pgErr.Message)
		case pgErr.Code == "53300":
			return fmt.Sprintf("PostgreSQL at %s has no free connection slot (%s): raise max_connections or close idle sessions", target, pgErr.Message)
		case strings.Contains(pgErr.Message, "WAL level not sufficient") || strings.Contains(pgErr.Message, "wal_level"):
			return fmt.Sprintf("PostgreSQL at %s: %s: set wal_level = replica in postgresql.conf and restart PostgreSQL", target, pgErr.Message)
		case pgErr.Code == "57P03":
			return fmt.Sprintf("PostgreSQL at %s is starting up or shutting down (%s): retry when it accepts connections", target, pgErr.Message)
		}
		return fmt.Sprintf("PostgreSQL at %s: %s (SQLSTATE %s)", target, pgErr.Message, pgErr.Code)
	}
	var opErr *net.OpError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("cannot reach PostgreSQL at %s: connection refused; is it running and listening there? check --pg or PGHOST/PGPORT", target)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("cannot reach PostgreSQL at %s: timed out; check the host, port and firewalls", target)
	case errors.As(err, &opErr):
		return fmt.Sprintf("cannot reach PostgreSQL at %s: %v", target, opErr.Err)
	case errors.Is(err, syscall.ENOENT):
		return fmt.Sprintf("cannot reach PostgreSQL at %s: no socket there; is it running? check --pg or PGHOST", target)
	}
	return fmt.Sprintf("PostgreSQL at %s: %s", target, redact.Message(err.Error(), cfg.Password))
}

// Kind says what a PostgreSQL failure needs to end.
type Kind int

const (
	// Transient failures may pass by themselves: the server is down,
	// restarting or busy.
	Transient Kind = iota
	// Authentication: the server rejected the credentials (a wrong or
	// missing password, an unknown role).
	Authentication
	// Configuration: the server refuses for a reason a human must fix in
	// its configuration: no pg_hba.conf entry, a role without REPLICATION,
	// wal_level too low, every WAL sender taken.
	Configuration
)

// KindOf classifies a PostgreSQL error.
func KindOf(err error) Kind {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return Transient
	}
	switch {
	case pgErr.Code == "28P01":
		return Authentication
	case pgErr.Code == "28000" && strings.Contains(pgErr.Message, "pg_hba.conf"):
		return Configuration
	case pgErr.Code == "28000":
		return Authentication
	case pgErr.Code == "42501",
		strings.Contains(pgErr.Message, "wal_level"),
		pgErr.Code == "53300" && strings.Contains(pgErr.Message, "max_wal_senders"):
		return Configuration
	}
	return Transient
}

// Major is the major version in a server_version string ("15.10 (Debian
// ...)" is 15, "9.6.3" is 9, "18beta1" is 18); 0 when unknown.
func Major(version string) int {
	v := strings.TrimSpace(version)
	end := 0
	for end < len(v) && v[end] >= '0' && v[end] <= '9' {
		end++
	}
	n, err := strconv.Atoi(v[:end])
	if err != nil {
		return 0
	}
	return n
}

// QuoteConnValue quotes a value of a libpq keyword/value connection
// string when it needs it.
func QuoteConnValue(s string) string {
	if s != "" && !strings.ContainsAny(s, " '\\\t\n") {
		return s
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// QuoteIdent quotes an SQL identifier (a role, a slot name).
func QuoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

// Show returns the value of a server setting (SHOW works on replication
// connections too). name is a plain setting name: the replication
// protocol's grammar takes no quoted identifier there, so it is checked
// rather than quoted.
func Show(ctx context.Context, conn *pgconn.PgConn, name string) (string, error) {
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.') || name == "" {
			return "", fmt.Errorf("SHOW %q: not a setting name", name)
		}
	}
	rows, err := conn.Exec(ctx, "SHOW "+name).ReadAll()
	if err != nil {
		return "", fmt.Errorf("SHOW %s: %w", name, err)
	}
	if len(rows) != 1 || len(rows[0].Rows) != 1 || len(rows[0].Rows[0]) != 1 {
		return "", fmt.Errorf("SHOW %s: unexpected result", name)
	}
	return string(rows[0].Rows[0][0]), nil
}

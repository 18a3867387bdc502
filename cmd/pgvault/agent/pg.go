package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/stream"
)

// node is one PostgreSQL server of a site.
type node struct {
	name string // without secrets, for messages and alert sources
	cfg  *pgconn.Config
}

// source is the alert source name of a node.
func (n node) source() string { return "postgres " + n.name }

// parseNodes parses a site's conninfos as replication connections.
func parseNodes(s *Site) ([]node, error) {
	var out []node
	for i, conninfo := range s.PG {
		cfg, err := pg.ParseConfig(conninfo)
		if err != nil {
			return nil, fmt.Errorf("sites.%s.pg[%d]: %w", s.Name, i, err)
		}
		if s.Secrets.PGPassword != "" {
			cfg.Password = s.Secrets.PGPassword
		}
		cfg = pg.Replication(cfg, "")
		out = append(out, node{name: pg.Target(cfg), cfg: cfg})
	}
	return out, nil
}

// Classify says which alert a PostgreSQL failure starts: "" for failures
// that may pass by themselves (the server is down, restarting, or busy).
//
//   - authentication_error: the server rejected the credentials: a wrong
//     or missing password (28P01) or an unknown role (28000 other than
//     pg_hba.conf).
//   - configuration_error: the server refuses for a configuration reason:
//     no pg_hba.conf entry, a role without REPLICATION, wal_level too low,
//     every WAL sender taken (max_wal_senders), the replication slot
//     invalidated, or a timeline the repository does not follow.
//   - version_unsupported_error: the server is too old for pgvault.
func Classify(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pg.KindOf(err) {
		case pg.Authentication:
			return AlertAuthentication
		case pg.Configuration:
			return AlertConfiguration
		}
		return ""
	}
	switch {
	case errors.Is(err, backup.ErrUnsupportedServer):
		return AlertVersionUnsupported
	case errors.Is(err, stream.ErrSlotInvalidated), errors.Is(err, stream.ErrTimelineConflict):
		return AlertConfiguration
	}
	return ""
}

type purpose int

const (
	purposeStream purpose = iota
	purposeBackup
	purposeProbe
)

func (p purpose) appName(base string) string {
	switch p {
	case purposeBackup:
		return base + " backup"
	case purposeProbe:
		return base + " probe"
	}
	return base
}

// connect opens a replication connection to n for p and checks the
// server: version, and that it is the cluster the repository holds. It
// starts and ends the site's PostgreSQL alerts for n as it goes.
func (s *site) connect(ctx context.Context, n node, p purpose) (*pgconn.PgConn, error) {
	cfg := n.cfg.Copy()
	cfg.RuntimeParams["application_name"] = p.appName(s.config().ApplicationName)
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		failure := pg.Explain(err, cfg)
		if Classify(err) == AlertAuthentication {
			failure = &authFailure{msg: s.authMessage(n, err), err: err}
		}
		if ctx.Err() == nil {
			s.pgFailed(n, failure)
		}
		return nil, failure
	}
	version := conn.ParameterStatus("server_version")
	major := pg.Major(version)
	oldest, what := pg.OldestBackupMajor, "base backups"
	if p == purposeStream {
		oldest, what = pg.OldestStreamMajor, "WAL streaming"
	}
	if err := pg.CheckMajor(version, oldest, what); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		err = fmt.Errorf("PostgreSQL at %s: %w", n.name, err)
		s.a.alerts.Raise(s.name, AlertVersionUnsupported, n.source(), err.Error())
		return nil, err
	}
	s.a.alerts.Clear(s.name, AlertVersionUnsupported, n.source())
	s.a.alerts.Clear(s.name, AlertAuthentication, n.source())
	s.a.alerts.Clear(s.name, AlertConfiguration, n.source())
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, pg.Explain(err, cfg)
	}
	s.noteServer(n, version, major, sys)
	if msg := s.identityMismatch(n, sys.SystemID, major); msg != "" {
		conn.Close(context.WithoutCancel(ctx))
		s.a.alerts.Raise(s.name, AlertVersionMismatch, "repository", msg)
		return nil, errors.New(msg)
	}
	s.a.alerts.Clear(s.name, AlertVersionMismatch, "repository")
	return conn, nil
}

// connectAny tries the site's nodes in order and returns the first
// connection that works, or the last error.
func (s *site) connectAny(ctx context.Context, p purpose) (*pgconn.PgConn, node, error) {
	var last error
	for _, n := range s.nodes() {
		conn, err := s.connect(ctx, n, p)
		if err == nil {
			return conn, n, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	if last == nil {
		last = errors.New("no PostgreSQL node configured")
	}
	return nil, node{}, last
}

// pgFailed raises the alert a connection failure calls for.
func (s *site) pgFailed(n node, err error) {
	if name := Classify(err); name != "" {
		s.a.alerts.Raise(s.name, name, n.source(), err.Error())
	}
}

// identityMismatch compares a server with the repository's newest
// backup: another system identifier (another cluster, or one rebuilt by
// pg_upgrade) or another major version means its WAL cannot continue the
// archive.
func (s *site) identityMismatch(n node, systemID string, major int) string {
	s.mu.Lock()
	id := s.repoIdentity
	s.mu.Unlock()
	if id.systemID == "" {
		return ""
	}
	if id.systemID == systemID && (id.major == 0 || major == 0 || id.major == major) {
		return ""
	}
	return fmt.Sprintf("PostgreSQL at %s is system %s (version %d) but the repository's newest backup is of system %s (version %d): it is another cluster, or was upgraded; point sites.%s.repo at a new repository (`pgvault repo init`) or sites.%s.pg back at the cluster the repository holds",
		n.name, systemID, major, id.systemID, id.major, s.name, s.name)
}

// authMessage explains a rejected login in the agent's terms: where the
// password comes from and how to apply a new one.
func (s *site) authMessage(n node, err error) string {
	var pgErr *pgconn.PgError
	what := "rejected the login"
	if errors.As(err, &pgErr) {
		what = "rejected the login: " + pgErr.Message
	}
	cfg := s.config()
	from := "password= in sites." + s.name + ".pg, PGPASSWORD or ~/.pgpass"
	if f := cfg.Secrets.PGPasswordFrom; f != "" {
		from = f
	}
	return fmt.Sprintf("PostgreSQL at %s %s; the password came from %s: set the right one in sites.%s.pg_password_file (or %s), or fix the role, then reload the agent (SIGHUP)",
		n.name, what, from, s.name, PGPasswordEnv(s.name))
}

// authFailure is a rejected login explained in the agent's terms (where
// the password came from); it unwraps to its cause, so that stream.Run
// can tell a failure that reconnecting cannot fix from one it can.
type authFailure struct {
	msg string
	err error
}

func (e *authFailure) Error() string { return e.msg }
func (e *authFailure) Unwrap() error { return e.err }

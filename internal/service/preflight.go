package service

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/internal/redact"
	"github.com/pgvault/pgvault/stream"
)

// PreflightOptions configure Preflight.
type PreflightOptions struct {
	Conninfo string
	// Password, when set, replaces the conninfo's (the agent's
	// pg_password_file).
	Password        string
	Slot            string
	ApplicationName string
}

// Preflight checks that a server is ready for WAL streaming (settings,
// role, slot) over a normal SQL session, and probes a replication
// connection. It returns the report and the server as messages name it.
// A connection that fails is an explained error (pg.Explain) with no
// report.
func Preflight(ctx context.Context, o PreflightOptions) (*stream.PreflightReport, string, error) {
	cfg, err := sqlSession(o.Conninfo, o.ApplicationName)
	if err != nil {
		return nil, "", err
	}
	if o.Password != "" {
		cfg.Password = o.Password
	}
	target := pg.Target(&cfg.Config)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, target, pg.Explain(err, &cfg.Config)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rep, err := stream.Preflight(ctx, conn, stream.PreflightOptions{Slot: o.Slot})
	if err != nil {
		return nil, target, fmt.Errorf("%s: %w", target, err)
	}
	probe, _ := stream.ProbeReplication(ctx, &cfg.Config)
	rep.Add(probe)
	return rep, target, nil
}

// NotReady is the *Problems error of a report that is not ready, or nil.
func NotReady(rep *stream.PreflightReport, target string) error {
	if rep.Ready {
		return nil
	}
	var names []string
	for _, f := range rep.Errors() {
		names = append(names, f.Setting)
	}
	return problemsf("PostgreSQL at %s is not ready for WAL streaming: %s; apply the fixes above", target, joinComma(names))
}

// sqlSession parses conninfo for a normal SQL session (pgx), even when it
// is the replication conninfo the other commands use: without
// replication=, in database postgres unless it names one, with the given
// application_name unless it sets one. Its error never holds a password.
func sqlSession(conninfo, applicationName string) (*pgx.ConnConfig, error) {
	if _, err := pg.ParseConfig(conninfo); err != nil {
		return nil, err // pgx's own error would quote the conninfo
	}
	cfg, err := pgx.ParseConfig(conninfo)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", pg.ErrBadConninfo, redact.Message(err.Error(), conninfo))
	}
	delete(cfg.RuntimeParams, "replication")
	if cfg.Database == "" {
		cfg.Database = "postgres"
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = applicationName
	}
	return cfg, nil
}

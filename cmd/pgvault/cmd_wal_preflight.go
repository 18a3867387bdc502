package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"
	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/internal/redact"
	"github.com/pgvault/pgvault/stream"
)

type walPreflightOptions struct {
	slot string
}

func walPreflightCommand() *cli.Command {
	var o walPreflightOptions
	return &cli.Command{
		Name:  "preflight",
		Usage: "check that PostgreSQL (--pg) is set up for WAL streaming: settings, role, slot, pg_hba.conf (exit 3 when not ready)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "slot", Value: stream.DefaultSlot, Destination: &o.slot, Usage: "replication slot `NAME` the streamer uses"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if c.NArg() > 0 {
				return usagef("wal preflight takes no arguments (got %q)", c.Args().First())
			}
			return runWALPreflight(c.Context, e, o)
		},
	}
}

func runWALPreflight(ctx context.Context, e *env, o walPreflightOptions) error {
	cfg, err := sqlSession(e.c.String("pg"), "pgvault preflight")
	if err != nil {
		return fmt.Errorf("--pg: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("wal preflight: %w", pg.Explain(err, &cfg.Config))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rep, err := stream.Preflight(ctx, conn, stream.PreflightOptions{Slot: o.slot})
	if err != nil {
		return err
	}
	probe, _ := stream.ProbeReplication(ctx, &cfg.Config)
	rep.Add(probe)
	if err := e.out.emit(rep, func(w io.Writer) { printPreflight(w, rep) }); err != nil {
		return err
	}
	if rep.Ready {
		return nil
	}
	var names []string
	for _, f := range rep.Errors() {
		names = append(names, f.Setting)
	}
	return problemsf("PostgreSQL at %s is not ready for WAL streaming: %s; apply the fixes above",
		pg.Target(&cfg.Config), strings.Join(names, ", "))
}

func printPreflight(w io.Writer, rep *stream.PreflightReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, f := range rep.Findings {
		line := fmt.Sprintf("%s\t%s\t%s", f.Status, f.Setting, f.Message)
		if f.Fix != "" && f.Status != stream.FindingOK {
			line += " — fix: " + f.Fix
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	if rep.Ready {
		fmt.Fprintf(w, "ready: PostgreSQL %s, role %q, slot %q\n", rep.ServerVersion, rep.Role, rep.Slot)
	}
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

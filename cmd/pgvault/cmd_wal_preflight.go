package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/internal/service"
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
	rep, target, err := service.Preflight(ctx, service.PreflightOptions{Conninfo: e.c.String("pg"), Slot: o.slot, ApplicationName: "pgvault preflight"})
	if err != nil {
		return fmt.Errorf("wal preflight: %w", err)
	}
	if err := e.out.emit(rep, func(w io.Writer) { printPreflight(w, rep) }); err != nil {
		return err
	}
	return service.NotReady(rep, target)
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

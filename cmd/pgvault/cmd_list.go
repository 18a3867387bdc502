package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/internal/service"
)

func listCommand() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list base backups (id, label, time, LSNs, sizes)",
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			return runList(c.Context, e)
		},
	}
}

func runList(ctx context.Context, e *env) error {
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	entries, err := site.List(ctx)
	if err != nil {
		return err
	}
	return e.out.emit(entries, func(w io.Writer) {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tKIND\tLABEL\tSTARTED (UTC)\tTOOK\tSTART LSN\tSTOP LSN\tTLI\tSIZE\tNEW STORED")
		for _, l := range entries {
			label := l.Label
			if l.Standalone {
				label += " (standalone)"
			}
			kind := l.Method
			switch {
			case l.Method == "synthetic":
				kind = "synthetic from " + service.ShortID(l.Parent)
			case kind == "":
				kind = "stream"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.0fs\t%s\t%s\t%d\t%s\t%s\n", service.ShortID(l.ID), kind, label, l.StartTime.Format("2006-01-02 15:04:05"),
				l.Seconds, l.StartLSN, l.StopLSN, l.Timeline, service.HumanBytes(l.Bytes), service.HumanBytes(l.StoredBytes))
		}
		tw.Flush()
		if len(entries) == 0 {
			fmt.Fprintln(w, "no backups yet: take one with `pgvault backup`")
		}
	})
}

package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/internal/service"
)

func walCheckCommand() *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "list WAL missing from the repository between the oldest base backup and the newest archived WAL (exit 3 on a gap)",
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if c.NArg() > 0 {
				return usagef("wal check takes no arguments (got %q)", c.Args().First())
			}
			return runWALCheck(c.Context, e)
		},
	}
}

func runWALCheck(ctx context.Context, e *env) error {
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	rep, err := site.CheckWAL(ctx)
	if err != nil {
		return err
	}
	if err := e.out.emit(rep, func(w io.Writer) { printGaps(w, rep) }); err != nil {
		return err
	}
	return rep.Problem()
}

func printGaps(w io.Writer, rep *service.WALCheckReport) {
	g := rep.GapReport
	if g.SegmentsExpected == 0 && len(g.MissingHistory) == 0 {
		fmt.Fprintln(w, "no WAL and no backup in the repository: nothing to check")
		return
	}
	fmt.Fprintf(w, "checked %s .. %s (%d segments) from %s (timeline %d at %s) to the newest WAL on timeline %d\n",
		g.From, g.To, g.SegmentsExpected, rep.Start, g.StartTimeline, g.StartLSN, g.Timeline)
	for _, rg := range g.MissingRanges {
		first := wal.Segment{Timeline: rg.Timeline, No: rg.First}.Name(g.SegmentSize)
		if rg.Len() == 1 {
			fmt.Fprintf(w, "missing: %s\n", first)
			continue
		}
		last := wal.Segment{Timeline: rg.Timeline, No: rg.Last}.Name(g.SegmentSize)
		fmt.Fprintf(w, "missing: %s .. %s (%d segments)\n", first, last, rg.Len())
	}
	for _, h := range g.MissingHistory {
		fmt.Fprintf(w, "missing history file: %s\n", h)
	}
	if g.Partial != "" {
		fmt.Fprintf(w, "newest segment %s is stored as .partial (still being written): not a gap\n", g.Partial)
	}
	if g.OK {
		fmt.Fprintln(w, "ok: no gaps")
	}
}

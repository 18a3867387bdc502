package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/stream"
	"github.com/pgvault/pgvault/stream/wal"
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

type walCheckReport struct {
	*stream.GapReport
	// Start says where the check began: "backup <id>" (the oldest base
	// backup) or "oldest WAL" when there is no backup.
	Start string `json:"start"`
}

func runWALCheck(ctx context.Context, e *env) error {
	r, err := e.openRepo(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	snaps, err := r.Snapshots(ctx)
	if err != nil {
		return err
	}
	var opts stream.CheckOptions
	start := "oldest WAL"
	for _, s := range snaps { // oldest first
		if s.Kind != backup.SnapshotKind {
			continue
		}
		info, err := backup.InfoOf(s)
		if err != nil {
			return err
		}
		opts.StartTimeline, opts.StartLSN = info.Timeline, info.StartLSN
		start = "backup " + s.ShortID()
		break
	}
	gaps, err := stream.CheckGaps(ctx, r, opts)
	if err != nil {
		return err
	}
	rep := walCheckReport{GapReport: gaps, Start: start}
	if err := e.out.emit(rep, func(w io.Writer) { printGaps(w, rep) }); err != nil {
		return err
	}
	if gaps.OK {
		return nil
	}
	var parts []string
	if n := len(gaps.Missing); n > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d segments missing (first %s)", n, gaps.SegmentsExpected, gaps.Missing[0]))
	}
	if n := len(gaps.MissingHistory); n > 0 {
		parts = append(parts, fmt.Sprintf("history file %s missing", strings.Join(gaps.MissingHistory, ", ")))
	}
	return problemsError{"WAL archive has gaps: " + strings.Join(parts, "; ") +
		": recovery cannot pass them; take a new base backup (`pgvault backup`) to restore past them, and find out why archiving skipped them"}
}

func printGaps(w io.Writer, rep walCheckReport) {
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

package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/backup"
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

type listEntry struct {
	ID          string    `json:"id"`
	Label       string    `json:"label"`
	StartTime   time.Time `json:"start_time"`
	StopTime    time.Time `json:"stop_time"`
	Seconds     float64   `json:"seconds"`
	StartLSN    string    `json:"start_lsn"`
	StopLSN     string    `json:"stop_lsn"`
	Timeline    uint32    `json:"timeline"`
	Standalone  bool      `json:"standalone"`
	Bytes       int64     `json:"bytes"`
	StoredBytes int64     `json:"stored_bytes"`
	SystemID    string    `json:"system_identifier"`
}

func runList(ctx context.Context, e *env) error {
	r, err := e.openRepo(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	snaps, err := r.Snapshots(ctx)
	if err != nil {
		return err
	}
	entries := []listEntry{}
	for _, s := range snaps {
		if s.Kind != backup.SnapshotKind {
			continue
		}
		info, err := backup.InfoOf(s)
		if err != nil {
			return err
		}
		entries = append(entries, listEntry{
			ID: s.ID, Label: s.Label, StartTime: s.StartTime, StopTime: s.EndTime,
			Seconds: s.EndTime.Sub(s.StartTime).Seconds(), StartLSN: info.StartLSN.String(), StopLSN: info.StopLSN.String(),
			Timeline: info.Timeline, Standalone: info.Standalone, Bytes: s.Summary.Bytes, StoredBytes: s.Summary.StoredBytes,
			SystemID: info.SystemIdentifier,
		})
	}
	return e.out.emit(entries, func(w io.Writer) {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tLABEL\tSTARTED (UTC)\tTOOK\tSTART LSN\tSTOP LSN\tTLI\tSIZE\tNEW STORED")
		for _, l := range entries {
			label := l.Label
			if l.Standalone {
				label += " (standalone)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.0fs\t%s\t%s\t%d\t%s\t%s\n", l.ID[:8], label, l.StartTime.Format("2006-01-02 15:04:05"),
				l.Seconds, l.StartLSN, l.StopLSN, l.Timeline, humanBytes(l.Bytes), humanBytes(l.StoredBytes))
		}
		tw.Flush()
		if len(entries) == 0 {
			fmt.Fprintln(w, "no backups yet: take one with `pgvault backup`")
		}
	})
}

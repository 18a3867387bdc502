package main

import (
	"context"
	"fmt"
	"io"

	"github.com/pgvault/pgvault/internal/service"
	"github.com/urfave/cli/v2"
)

func repoStatsCommand() *cli.Command {
	return &cli.Command{
		Name:  "stats",
		Usage: "show sizes: logical, unique, stored, dedup and compression ratios",
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			return runRepoStats(c.Context, e)
		},
	}
}

func runRepoStats(ctx context.Context, e *env) error {
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	st, err := site.Stats(ctx)
	if err != nil {
		return err
	}
	return e.out.emit(st, func(w io.Writer) {
		fmt.Fprintf(w, "snapshots:          %d\n", st.Snapshots)
		fmt.Fprintf(w, "WAL files:          %d\n", st.WALFiles)
		fmt.Fprintf(w, "logical size:       %s (all snapshots' files)\n", service.HumanBytes(st.LogicalBytes))
		fmt.Fprintf(w, "unique data:        %s in %d chunks\n", service.HumanBytes(st.UniqueBytes), st.DataBlobs)
		fmt.Fprintf(w, "stored:             %s in %d packs (%d blobs)\n", service.HumanBytes(st.StoredBytes), st.Packs, st.Blobs)
		fmt.Fprintf(w, "dedup ratio:        %.2fx\n", st.DedupRatio)
		fmt.Fprintf(w, "compression ratio:  %.2fx\n", st.Compression)
	})
}

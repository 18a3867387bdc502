package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"
)

func repoRebuildIndexCommand() *cli.Command {
	return &cli.Command{
		Name:  "rebuild-index",
		Usage: "rebuild the index from the pack headers (after a damaged or lost index)",
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			return runRepoRebuildIndex(c.Context, e)
		},
	}
}

func runRepoRebuildIndex(ctx context.Context, e *env) error {
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	res, err := site.RebuildIndex(ctx)
	if err != nil {
		return err
	}
	return e.out.emit(res, func(w io.Writer) {
		for _, p := range res.Problems {
			fmt.Fprintf(w, "skipped damaged %s\n", p)
		}
		fmt.Fprintf(w, "indexed %d blobs in %d packs; replaced %d index objects\n", res.Blobs, res.Packs, len(res.Replaced))
	})
}

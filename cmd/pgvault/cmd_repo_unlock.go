package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"
)

func repoUnlockCommand() *cli.Command {
	return &cli.Command{
		Name:  "unlock",
		Usage: "remove stale locks (of dead processes, or not refreshed for 30 minutes)",
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			return runRepoUnlock(c.Context, e)
		},
	}
}

func runRepoUnlock(ctx context.Context, e *env) error {
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	removed, err := site.Unlock(ctx)
	if err != nil {
		return err
	}
	return e.out.emit(map[string]any{"removed": removed}, func(w io.Writer) {
		for _, l := range removed {
			fmt.Fprintf(w, "removed stale %s\n", l)
		}
		fmt.Fprintf(w, "%d stale locks removed\n", len(removed))
	})
}

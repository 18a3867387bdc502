package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/repo"
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
	r, err := e.openRepo(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	removed, err := r.RemoveStaleLocks(ctx)
	if err != nil {
		return err
	}
	if removed == nil {
		removed = []repo.LockInfo{}
	}
	return e.out.emit(map[string]any{"removed": removed}, func(w io.Writer) {
		for _, l := range removed {
			fmt.Fprintf(w, "removed stale %s\n", l)
		}
		fmt.Fprintf(w, "%d stale locks removed\n", len(removed))
	})
}

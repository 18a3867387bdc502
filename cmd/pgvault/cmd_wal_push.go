package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/internal/service"
)

func walPushCommand() *cli.Command {
	return &cli.Command{
		Name:      "push",
		Usage:     "archive one WAL file into the repository (archive_command = 'pgvault wal push %p')",
		ArgsUsage: "PATH",
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if c.NArg() != 1 {
				return usagef("wal push takes one WAL file path (archive_command = 'pgvault wal push %%p'), got %d arguments", c.NArg())
			}
			return runWALPush(c.Context, e, c.Args().First())
		},
	}
}

func runWALPush(ctx context.Context, e *env, path string) error {
	if err := checkWALPath(path); err != nil {
		return err
	}
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	return pushWAL(ctx, e, site, path)
}

func checkWALPath(path string) error {
	if name := filepath.Base(path); wal.Classify(name) == wal.KindInvalid {
		return usagef("wal push %s: %q is not a WAL file name (a 24-hex segment, a .partial segment, TTTTTTTT.history or a .backup file)", path, name)
	}
	return nil
}

// pushWAL archives the file at path into site and reports it.
func pushWAL(ctx context.Context, e *env, site *service.Site, path string) error {
	name := filepath.Base(path)
	rep, err := site.PushWAL(ctx, path)
	if err != nil {
		return err
	}
	return e.out.emit(rep, func(w io.Writer) {
		what := "archived"
		if rep.AlreadyStored {
			what = "already archived (same content)"
		}
		fmt.Fprintf(w, "%s %s: %s, %s, timeline %d, %.2fs\n", what, name, rep.Kind, service.HumanBytes(rep.Size), rep.Timeline, rep.Seconds)
	})
}

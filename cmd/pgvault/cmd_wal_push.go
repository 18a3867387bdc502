package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/stream"
	"github.com/pgvault/pgvault/stream/wal"
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

type walPushReport struct {
	*stream.PushResult
	Seconds float64 `json:"seconds"`
}

func runWALPush(ctx context.Context, e *env, path string) error {
	start := time.Now()
	name := filepath.Base(path)
	if wal.Classify(name) == wal.KindInvalid {
		return usagef("wal push %s: %q is not a WAL file name (a 24-hex segment, a .partial segment, TTTTTTTT.history or a .backup file)", path, name)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("wal push: %w", err)
	}
	// Check the file before opening the repository: a bad file is refused
	// without a key derivation, and even when the repository is down.
	if _, err := stream.VerifyFile(name, data); err != nil {
		return refusedPush(name, err)
	}
	r, err := e.openConcurrentWriter(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	// archive_command runs at any moment, also while prune runs: it takes a
	// concurrent lock, which excludes nothing, and opens the repository as
	// a concurrent writer, which reuses no blob prune could be deleting.
	lock, err := r.Lock(ctx, repo.LockConcurrent, "wal push")
	if err != nil {
		return err
	}
	defer lock.Unlock(context.WithoutCancel(ctx))
	res, err := stream.Push(ctx, r, name, data, stream.PushOptions{})
	if err != nil {
		return refusedPush(name, err)
	}
	rep := walPushReport{PushResult: res, Seconds: time.Since(start).Seconds()}
	return e.out.emit(rep, func(w io.Writer) {
		what := "archived"
		if res.AlreadyStored {
			what = "already archived (same content)"
		}
		fmt.Fprintf(w, "%s %s: %s, %s, timeline %d, %.2fs\n", what, name, res.Kind, humanBytes(res.Size), res.Timeline, rep.Seconds)
	})
}

// refusedPush words a refused push so the PostgreSQL log says what to do.
func refusedPush(name string, err error) error {
	switch {
	case errors.Is(err, repo.ErrWALConflict):
		return fmt.Errorf("refusing to archive %s: %w. This is serious: either two clusters archive into this repository, "+
			"or a copy of this cluster (a restored backup, a promoted standby) wrote WAL without starting a new timeline. "+
			"Stop and compare system identifiers (`pgvault list`, pg_controldata) before archiving goes on; nothing was overwritten", name, err)
	case errors.Is(err, wal.ErrInvalidSegment), errors.Is(err, wal.ErrInvalidHistory):
		return fmt.Errorf("refusing to archive %s: %w; nothing was stored: the file does not hold what its name says (damaged, recycled or copied under the wrong name)", name, err)
	}
	return err
}

package main

import (
	"context"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/internal/service"
	"github.com/pgvault/pgvault/stream"
)

type walFetchOptions struct {
	prefetch int
}

func walFetchCommand() *cli.Command {
	var o walFetchOptions
	return &cli.Command{
		Name:      "fetch",
		Usage:     "write one archived WAL file to DEST (restore_command = 'pgvault wal fetch %f %p'); exit 1 if it is not archived",
		ArgsUsage: "NAME DEST",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "prefetch", Value: stream.DefaultPrefetch, Destination: &o.prefetch,
				Usage: "fetch the next `N` segments ahead in the background into the local spool (0: off)"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if c.NArg() != 2 {
				return usagef("wal fetch takes a WAL file name and a destination (restore_command = 'pgvault wal fetch %%f %%p'), got %d arguments", c.NArg())
			}
			if o.prefetch < 0 {
				return usagef("--prefetch %d: must be 0 (off) or more", o.prefetch)
			}
			return runWALFetch(c.Context, e, c.Args().Get(0), c.Args().Get(1), o)
		},
	}
}

func runWALFetch(ctx context.Context, e *env, name, dest string, o walFetchOptions) error {
	if err := checkWALName(name); err != nil {
		return err
	}
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	return fetchWAL(ctx, e, site, name, dest, o)
}

func checkWALName(name string) error {
	if wal.Classify(name) == wal.KindInvalid {
		return usagef("wal fetch: %q is not a WAL file name (a 24-hex segment, a .partial segment, TTTTTTTT.history or a .backup file)", name)
	}
	return nil
}

// fetchWAL writes the archived WAL file name of site to dest.
func fetchWAL(ctx context.Context, e *env, site *service.Site, name, dest string, o walFetchOptions) error {
	// restore_command runs in the data directory: a standby's has
	// standby.signal (see service.FetchOptions.NoPartial).
	_, standby := os.Stat("standby.signal")
	rep, err := site.FetchWAL(ctx, name, dest, service.FetchOptions{Prefetch: o.prefetch, LogLevel: e.c.String("log-level"), NoPartial: standby == nil})
	if err != nil {
		return err
	}
	return e.out.emit(rep, func(io.Writer) {}) // restore_command: PostgreSQL logs what it restored
}

type walPrefetchOptions struct {
	after   string
	segSize uint64
	count   int
}

// walPrefetchCommand is the hidden background half of wal fetch.
func walPrefetchCommand() *cli.Command {
	var o walPrefetchOptions
	return &cli.Command{
		Name:   "prefetch",
		Usage:  "fill the local WAL spool with the segments after NAME (started by wal fetch)",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "after", Required: true, Destination: &o.after, Usage: "segment `NAME` recovery asked for last"},
			&cli.Uint64Flag{Name: "segment-size", Value: wal.DefaultSegmentSize, Destination: &o.segSize, Usage: "WAL segment size in `BYTES`"},
			&cli.IntFlag{Name: "count", Value: stream.DefaultPrefetch, Destination: &o.count, Usage: "`N` segments to keep ahead"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if _, err := wal.ParseSegment(o.after, o.segSize); err != nil {
				return usageError{err}
			}
			return runWALPrefetch(c.Context, e, o)
		},
	}
}

func runWALPrefetch(ctx context.Context, e *env, o walPrefetchOptions) error {
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	return site.PrefetchWAL(ctx, service.PrefetchOptions{After: o.after, SegmentSize: o.segSize, Count: o.count})
}

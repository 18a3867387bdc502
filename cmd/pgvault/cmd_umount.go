package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	pgfs "github.com/pgvault/pgvault/fs"
)

type umountOptions struct {
	lazy    bool
	timeout time.Duration
}

func umountCommand() *cli.Command {
	var o umountOptions
	return &cli.Command{
		Name:      "umount",
		Usage:     "unmount a pgvault mount, also a stale one left by a killed process (\"Transport endpoint is not connected\")",
		ArgsUsage: "MOUNTPOINT",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "lazy", Destination: &o.lazy, Usage: "detach the mount (umount -l) if it is still busy after --timeout"},
			&cli.DurationFlag{Name: "timeout", Destination: &o.timeout, Value: 10 * time.Second, Usage: "keep retrying a busy mount this `LONG`"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if c.NArg() != 1 {
				return usagef("umount takes one MOUNTPOINT (got %d arguments)", c.NArg())
			}
			return runUmount(c.Context, e, c.Args().First(), o)
		},
	}
}

type umountReport struct {
	Mountpoint string `json:"mountpoint"`
	*pgfs.UnmountResult
}

func runUmount(ctx context.Context, e *env, mountpoint string, o umountOptions) error {
	uctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	res, err := pgfs.Unmount(uctx, mountpoint, o.lazy)
	if err != nil {
		return err
	}
	return e.out.emit(umountReport{Mountpoint: mountpoint, UnmountResult: res}, func(w io.Writer) {
		what := "unmounted"
		if res.Lazy {
			what = "detached (lazy unmount)"
		}
		stale := ""
		if res.Stale {
			stale = " (a stale mount: its pgvault process was gone)"
		}
		fmt.Fprintf(w, "%s %s%s\n", what, mountpoint, stale)
	})
}

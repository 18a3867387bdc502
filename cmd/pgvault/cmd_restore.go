package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/backup"
)

type restoreOptions struct {
	target        string
	tablespaceMap []string
	parallel      int
}

func restoreCommand() *cli.Command {
	var o restoreOptions
	var tsMap cli.StringSlice
	return &cli.Command{
		Name:      "restore",
		Usage:     "copy a base backup out into a new data directory",
		ArgsUsage: "[ID|latest]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "target", Destination: &o.target, Required: true, Usage: "data `DIR` to create (must be new or empty)"},
			&cli.StringSliceFlag{Name: "tablespace-map", Destination: &tsMap, Usage: "restore the tablespace at `OLD=NEW` elsewhere (repeatable)"},
			&cli.IntFlag{Name: "parallel", Destination: &o.parallel, Value: 8, Usage: "`N` files fetched at once"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if c.NArg() > 1 {
				return usagef("restore takes one backup ID (got %d arguments)", c.NArg())
			}
			o.tablespaceMap = tsMap.Value()
			return runRestore(c.Context, e, c.Args().First(), o)
		},
	}
}

type restoreReport struct {
	ID          string            `json:"id"`
	Target      string            `json:"target"`
	Tablespaces map[string]string `json:"tablespaces"`
	Files       int64             `json:"files"`
	Bytes       int64             `json:"bytes"`
	Seconds     float64           `json:"seconds"`
	MBPerSecond float64           `json:"mb_per_second"`
}

func runRestore(ctx context.Context, e *env, ref string, o restoreOptions) error {
	mapping := map[string]string{}
	for _, m := range o.tablespaceMap {
		old, new, ok := strings.Cut(m, "=")
		if !ok || !filepath.IsAbs(old) || !filepath.IsAbs(new) {
			return usagef("--tablespace-map %q: use OLD=NEW with absolute paths", m)
		}
		mapping[filepath.Clean(old)] = filepath.Clean(new)
	}
	r, err := e.openRepo(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	s, err := r.FindSnapshot(ctx, ref)
	if err != nil {
		return err
	}
	bar := newProgress(e.out, e.stderr, "restore")
	res, err := backup.Restore(ctx, r, s, backup.RestoreOptions{
		Target: o.target, TablespaceMap: mapping, Parallel: o.parallel,
		Progress: func(done, total int64) { bar.update(done, total, "bytes") },
	})
	bar.done()
	if err != nil {
		return err
	}
	rep := restoreReport{ID: s.ID, Target: o.target, Tablespaces: map[string]string{}, Files: res.Files, Bytes: res.Bytes,
		Seconds: res.Duration.Seconds(), MBPerSecond: mbPerSec(res.Bytes, res.Duration)}
	for oid, loc := range res.Tablespaces {
		rep.Tablespaces[fmt.Sprint(oid)] = loc
	}
	return e.out.emit(rep, func(w io.Writer) {
		fmt.Fprintf(w, "restored backup %s into %s: %d files, %s in %.1fs (%.0f MB/s)\n",
			s.ShortID(), o.target, res.Files, humanBytes(res.Bytes), res.Duration.Seconds(), rep.MBPerSecond)
		for oid, loc := range res.Tablespaces {
			fmt.Fprintf(w, "tablespace %d restored at %s\n", oid, loc)
		}
		fmt.Fprintln(w, "the data directory has no recovery configuration: for a point in time, use --to (coming with WAL archiving)")
	})
}

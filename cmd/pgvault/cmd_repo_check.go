package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/internal/service"
)

type repoCheckOptions struct {
	readData bool
}

func repoCheckCommand() *cli.Command {
	var o repoCheckOptions
	return &cli.Command{
		Name:  "check",
		Usage: "verify the repository's structure (exit 3 when damage is found)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "read-data", Destination: &o.readData,
				Usage: "also download every pack, decrypt every blob and re-hash it"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			return runRepoCheck(c.Context, e, o)
		},
	}
}

func runRepoCheck(ctx context.Context, e *env, o repoCheckOptions) error {
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	bar := newProgress(e.out, e.stderr, "reading packs")
	rep, err := site.Check(ctx, service.CheckOptions{
		ReadData: o.readData,
		Progress: func(done, total int, bytes int64) { bar.update(int64(done), int64(total), "packs") },
	})
	bar.done()
	if err != nil {
		return err
	}
	if err := e.out.emit(rep, func(w io.Writer) {
		for _, p := range rep.Errors {
			fmt.Fprintf(w, "error: %s\n", p)
		}
		for _, p := range rep.Warnings {
			fmt.Fprintf(w, "warning: %s\n", p)
		}
		what := "structure"
		if o.readData {
			what = fmt.Sprintf("structure and data (%d packs, %s read)", rep.PacksRead, service.HumanBytes(rep.BytesRead))
		}
		fmt.Fprintf(w, "checked %s: %d snapshots, %d WAL files, %d indexes, %d packs, %d blobs; %d errors, %d warnings\n",
			what, rep.Snapshots, rep.WALFiles, rep.Indexes, rep.Packs, rep.Blobs, len(rep.Errors), len(rep.Warnings))
	}); err != nil {
		return err
	}
	return rep.Problem()
}

package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/repo"
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

type repoCheckReport struct {
	OK bool `json:"ok"`
	*repo.CheckResult
}

func runRepoCheck(ctx context.Context, e *env, o repoCheckOptions) error {
	r, err := e.openRepo(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	lock, err := r.Lock(ctx, repo.LockShared, "check")
	if err != nil {
		return err
	}
	defer lock.Unlock(context.WithoutCancel(ctx))
	bar := newProgress(e.out, e.stderr, "reading packs")
	res, err := r.Check(ctx, repo.CheckOptions{
		ReadData: o.readData,
		Progress: func(done, total int, bytes int64) { bar.update(int64(done), int64(total), "packs") },
	})
	bar.done()
	if err != nil {
		return err
	}
	report := repoCheckReport{OK: len(res.Errors) == 0, CheckResult: res}
	if report.Errors == nil {
		report.Errors = []repo.Problem{}
	}
	if report.Warnings == nil {
		report.Warnings = []repo.Problem{}
	}
	if err := e.out.emit(report, func(w io.Writer) {
		for _, p := range res.Errors {
			fmt.Fprintf(w, "error: %s\n", p)
		}
		for _, p := range res.Warnings {
			fmt.Fprintf(w, "warning: %s\n", p)
		}
		what := "structure"
		if o.readData {
			what = fmt.Sprintf("structure and data (%d packs, %s read)", res.PacksRead, humanBytes(res.BytesRead))
		}
		fmt.Fprintf(w, "checked %s: %d snapshots, %d WAL files, %d indexes, %d packs, %d blobs; %d errors, %d warnings\n",
			what, res.Snapshots, res.WALFiles, res.Indexes, res.Packs, res.Blobs, len(res.Errors), len(res.Warnings))
	}); err != nil {
		return err
	}
	if len(res.Errors) > 0 {
		return problemsError{fmt.Sprintf("repository check found %d problems; first: %s", len(res.Errors), res.Errors[0])}
	}
	return nil
}

package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/internal/service"
	"github.com/pgvault/pgvault/repo"
)

type pruneOptions struct {
	policy backup.Policy
	apply  bool
	grace  time.Duration
}

func pruneCommand() *cli.Command {
	var o pruneOptions
	return &cli.Command{
		Name:  "prune",
		Usage: "apply a retention policy and remove unreferenced data (a dry run unless --apply)",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "keep-last", Destination: &o.policy.Count, Usage: "keep the newest `N` backups (pghoard basebackup_count)"},
			&cli.IntFlag{Name: "keep-days", Destination: &o.policy.AgeDaysMax, Usage: "drop backups older than `D` days (basebackup_age_days_max)"},
			&cli.IntFlag{Name: "keep-min", Destination: &o.policy.CountMin, Usage: "with --keep-days, always keep the newest `N` (basebackup_count_min)"},
			&cli.IntFlag{Name: "keep-daily", Destination: &o.policy.KeepDaily, Usage: "keep the newest backup of each of the last `N` days"},
			&cli.IntFlag{Name: "keep-weekly", Destination: &o.policy.KeepWeekly, Usage: "keep the newest backup of each of the last `N` weeks"},
			&cli.IntFlag{Name: "keep-monthly", Destination: &o.policy.KeepMonthly, Usage: "keep the newest backup of each of the last `N` months"},
			&cli.BoolFlag{Name: "apply", Destination: &o.apply, Usage: "delete for real (without it, only print what would go and why)"},
			&cli.DurationFlag{Name: "grace", Destination: &o.grace, Value: repo.DefaultPruneGrace,
				Usage: "never touch packs younger than this (protects writers running now, e.g. wal stream)"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if o.grace < repo.DefaultReuseWindow {
				return usagef("--grace %s is shorter than the %s in which a WAL streamer may reuse its own data; use at least that", o.grace, repo.DefaultReuseWindow)
			}
			return runPrune(c.Context, e, o)
		},
	}
}

func runPrune(ctx context.Context, e *env, o pruneOptions) error {
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	rep, err := site.Prune(ctx, service.PruneOptions{Policy: o.policy, Apply: o.apply, Grace: o.grace})
	if err != nil {
		return err
	}
	return e.out.emit(rep, func(w io.Writer) {
		for _, d := range rep.Backups {
			verdict := "keep"
			if !d.Keep {
				verdict = "drop"
			}
			fmt.Fprintf(w, "%s  backup %s  %s  %s\n", verdict, service.ShortID(d.ID), d.Time.Format("2006-01-02 15:04"), strings.Join(d.Reasons, "; "))
		}
		if rep.WALKeep != "" {
			fmt.Fprintf(w, "WAL: keep from %s; %d files before it go", rep.WALKeep, len(rep.WALDropped))
			if n := len(rep.WALDropped); n > 0 {
				fmt.Fprintf(w, " (%s .. %s)", rep.WALDropped[0].Name, rep.WALDropped[n-1].Name)
			}
			fmt.Fprintln(w)
		}
		g := rep.Repo
		fmt.Fprintf(w, "data: %d of %d packs deleted, %d repacked (%s copied), %d unindexed leftovers; %s freed of %s; %d packs younger than the grace period untouched\n",
			g.PacksDeleted, g.Packs, g.PacksRepacked, service.HumanBytes(g.BytesRepacked), g.PacksUnindexed, service.HumanBytes(g.BytesFreed), service.HumanBytes(g.BytesBefore), g.PacksYoung)
		if !o.apply {
			fmt.Fprintln(w, "dry run: nothing was deleted; run again with --apply to delete")
		}
	})
}

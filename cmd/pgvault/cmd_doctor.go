package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/cmd/pgvault/agent"
	"github.com/pgvault/pgvault/internal/service"
	"github.com/pgvault/pgvault/stream"
)

func doctorCommand() *cli.Command {
	return configCommand("doctor",
		"check what pgvault needs: PostgreSQL settings, repository access, secrets, FUSE, PostgreSQL programs, free disk (exit 3 on a problem)",
		"With --config, every site of the agent's configuration; without, the global --pg and --repo.\n"+
			"One line per finding, with the fix for anything that is not ok.",
		"", runDoctor)
}

func runDoctor(ctx context.Context, e *env, config string) error {
	d := service.NewDoctor(config)
	var dirs []service.DiskDir
	if config != "" {
		cfg, err := agent.Load(config, agent.LoadOptions{})
		if err != nil {
			d.Add(service.Finding{Check: "config", Status: service.FindingError, Message: oneLine(err.Error()),
				Fix: "correct the file (docs/reference/config.md describes every field)"})
			return finishDoctor(e, d)
		}
		d.Add(service.Finding{Check: "config", Status: service.FindingOK, Message: fmt.Sprintf("%s: %d sites", config, len(cfg.Sites))})
		switch _, err := agent.Load(config, agent.LoadOptions{Strict: true}); {
		case errors.Is(err, agent.ErrInsecureSecret):
			d.Add(service.Finding{Check: "secrets", Status: service.FindingError, Message: oneLine(err.Error()),
				Fix: "make secret files readable by the agent's user only (chmod 600, chown)"})
		case err == nil:
			d.Add(service.Finding{Check: "secrets", Status: service.FindingOK, Message: "no secret file is readable by every user"})
		}
		for _, name := range cfg.SiteNames() {
			s := cfg.Sites[name]
			if !s.IsActive() {
				d.Add(service.Finding{Site: name, Check: "site", Status: service.FindingOK, Message: "inactive (active: false): not checked"})
				continue
			}
			if s.Drill.Every() > 0 {
				d.ExpectDrills()
			}
			for _, conninfo := range s.PG {
				d.CheckPostgres(ctx, name, conninfo, s.Secrets.PGPassword, s.Slot, s.Mode)
			}
			d.CheckRepo(ctx, name, e.agentSite(s))
			if s.CacheDir != "" {
				dirs = append(dirs, service.DiskDir{What: "cache", Path: s.CacheDir})
			}
			dirs = append(dirs, service.DiskDir{What: "maintenance file folder", Path: filepath.Dir(s.MaintenanceModeFile)})
		}
		dirs = append(dirs, service.DiskDir{What: "state", Path: filepath.Dir(cfg.StateFile)}, service.DiskDir{What: "alerts", Path: cfg.AlertDir})
		if cfg.CacheDir != "" {
			dirs = append(dirs, service.DiskDir{What: "cache", Path: cfg.CacheDir})
		}
	} else {
		pg := e.c.String("pg")
		if pg == "" && os.Getenv("PGHOST") == "" {
			d.Add(service.Finding{Check: "postgres", Status: service.FindingWarning, Message: "no PostgreSQL given: not checked",
				Fix: "give --pg CONNINFO (or PGHOST...) or --config FILE"})
		} else {
			d.CheckPostgres(ctx, "", pg, "", stream.DefaultSlot, "stream")
		}
		if e.c.String("repo") == "" {
			d.Add(service.Finding{Check: "repository", Status: service.FindingWarning, Message: "no repository given: not checked",
				Fix: "give --repo URL (or PGVAULT_REPO) or --config FILE"})
		} else {
			if pf := e.c.String("password-file"); pf != "" {
				if err := agent.CheckSecretFile("--password-file", pf); err != nil {
					d.Add(service.Finding{Check: "secrets", Status: service.FindingError, Message: oneLine(err.Error()), Fix: "chmod 600 " + pf})
				}
			}
			if site, err := e.site(askPassword); err != nil {
				d.Add(service.Finding{Check: "repository", Status: service.FindingError, Message: oneLine(err.Error()), Fix: "give the repository's password (--password-file, PGVAULT_PASSWORD)"})
			} else {
				d.CheckRepo(ctx, "", site)
			}
		}
	}
	dirs = append(dirs, service.DiskDir{What: "cache", Path: e.cacheDir()}, service.DiskDir{What: "scratch (verify --boot, mount --scratch)", Path: os.TempDir()})
	d.CheckFUSE()
	d.CheckBinaries()
	d.CheckDisks(dirs)
	return finishDoctor(e, d)
}

// finishDoctor prints the findings and returns the verdict.
func finishDoctor(e *env, d *service.Doctor) error {
	verdict := d.Finish()
	if err := e.out.emit(d.Report, func(w io.Writer) { printDoctor(w, d.Report) }); err != nil {
		return err
	}
	return verdict
}

func printDoctor(w io.Writer, rep service.DoctorReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, f := range rep.Findings {
		check := f.Check
		if f.Site != "" {
			check = f.Site + ": " + check
		}
		line := fmt.Sprintf("%s\t%s\t%s", f.Status, check, f.Message)
		if f.Fix != "" && f.Status != service.FindingOK {
			line += " — fix: " + f.Fix
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	if rep.OK {
		fmt.Fprintln(w, "no problems found")
	}
}

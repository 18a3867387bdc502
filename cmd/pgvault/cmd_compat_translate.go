package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/cmd/pgvault/translate"
	"github.com/pgvault/pgvault/internal/atomicfile"
)

type compatTranslateOptions struct {
	from       string
	out        string
	force      bool
	secretsDir string
	site       string
}

func compatTranslateCommand() *cli.Command {
	var o compatTranslateOptions
	return &cli.Command{
		Name:      "translate",
		Usage:     "write a pgvault agent configuration from another tool's configuration file, for review",
		ArgsUsage: "FILE",
		Description: "Reads pghoard.json, pgbackrest.conf, barman.conf (with its configuration_files_directory) or WAL-G's\n" +
			"JSON/YAML file and writes pgvault.yaml: sites, nodes, schedule, retention, compression, alert and\n" +
			"state paths, storage. Every setting it could not carry over is a \"# not carried over\" comment;\n" +
			"no secret is copied. Check the result with `pgvault agent --check-config --config FILE`.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Destination: &o.from, Usage: "the `TOOL` that reads FILE: pghoard, pgbackrest, barman or walg"},
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Destination: &o.out, Usage: "write to `FILE` (mode 0600) instead of stdout"},
			&cli.BoolFlag{Name: "force", Destination: &o.force, Usage: "overwrite the --out file if it exists"},
			&cli.StringFlag{Name: "secrets-dir", Value: translate.DefaultSecretsDir, Destination: &o.secretsDir, Usage: "the `DIR` of the password files the configuration names"},
			&cli.StringFlag{Name: "site", Value: "main", Destination: &o.site, Usage: "the site `NAME` of a WAL-G configuration (it has one cluster)"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if o.from == "" {
				return usagef("compat translate needs --from TOOL: pghoard, pgbackrest, barman or walg")
			}
			if c.NArg() != 1 {
				return usagef("compat translate takes one FILE (got %d arguments)", c.NArg())
			}
			return runCompatTranslate(c.Context, e, c.Args().First(), o)
		},
	}
}

// translateReport is the JSON document of compat translate -o FILE.
type translateReport struct {
	File        string   `json:"file"`
	From        string   `json:"from"`
	Source      string   `json:"source"`
	Sites       []string `json:"sites"`
	NotCarried  int      `json:"not_carried_over"`
	SecretFiles []string `json:"secret_files"`
}

func runCompatTranslate(_ context.Context, e *env, file string, o compatTranslateOptions) error {
	tool, err := translate.ParseTool(o.from)
	if err != nil {
		return usageError{fmt.Errorf("--from: %w", err)}
	}
	if o.out == "" && e.out.json {
		return usagef("--output json describes the file written with --out FILE (without it the YAML goes to stdout)")
	}
	if o.out != "" && !o.force {
		if _, err := os.Lstat(o.out); err == nil {
			return usagef("%s exists: give --force to overwrite it, or another --out", o.out)
		}
	}
	res, err := translate.TranslateFile(tool, file, translate.Options{Now: time.Now(), SecretsDir: o.secretsDir, Site: o.site})
	switch {
	case errors.Is(err, translate.ErrSyntax), errors.Is(err, translate.ErrNoSites):
		return usageError{err}
	case err != nil:
		return err
	}
	if o.out == "" {
		_, err := e.c.App.Writer.Write(res.YAML)
		return err
	}
	// 0600: the file names secret files and may hold conninfos an operator adds passwords to.
	if err := atomicfile.WriteFile(o.out, res.YAML, atomicfile.Options{Perm: 0o600}); err != nil {
		return fmt.Errorf("write %s: %w", o.out, err)
	}
	rep := translateReport{File: o.out, From: string(tool), Source: file, Sites: res.Sites, NotCarried: res.NotCarried, SecretFiles: res.Secrets}
	return e.out.emit(rep, func(w io.Writer) {
		fmt.Fprintf(w, "wrote %s: %d sites (%s), %d settings not carried over (see its \"# not carried over\" comments)\n",
			o.out, len(res.Sites), strings.Join(res.Sites, ", "), res.NotCarried)
		if len(res.Secrets) > 0 {
			fmt.Fprintf(w, "create these secret files (first line, chmod 600): %s\n", strings.Join(res.Secrets, " "))
		}
		fmt.Fprintf(w, "review it, then: pgvault agent --check-config --config %s\n", o.out)
	})
}

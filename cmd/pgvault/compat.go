package main

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/cmd/pgvault/agent"
	"github.com/pgvault/pgvault/internal/service"
)

// dropIns maps the names pgvault answers to when installed under another
// tool's name (a symlink or a copy) to its compat command: the
// archive_command, restore_command and cron lines written for that tool
// then run pgvault unchanged.
var dropIns = map[string]string{
	"pghoard_postgres_command": "pghoard",
	"pgbackrest":               "pgbackrest",
	"wal-g":                    "wal-g",
	"barman-wal-archive":       "barman-wal-archive",
	"barman-wal-restore":       "barman-wal-restore",
}

// multicall rewrites the command line of a drop-in (argv[0] one of
// dropIns, or that name prefixed with "pgvault-") into the compat command
// it stands for.
func multicall(args []string) []string {
	if len(args) == 0 {
		return args
	}
	base := strings.TrimPrefix(filepath.Base(args[0]), "pgvault-")
	sub, ok := dropIns[base]
	if !ok {
		return args
	}
	return append([]string{args[0], "compat", sub}, args[1:]...)
}

func compatCommand() *cli.Command {
	return &cli.Command{
		Name:  "compat",
		Usage: "move from pghoard, pgBackRest, WAL-G or Barman: their command lines (pgvault run under their names) and configuration translated",
		Description: "Install links named after the tool pgvault replaces (pghoard_postgres_command, pgbackrest, wal-g,\n" +
			"barman-wal-archive, barman-wal-restore) pointing at the pgvault binary: the archive_command,\n" +
			"restore_command and scheduled lines written for that tool then run pgvault. The repository is the\n" +
			"site of the agent's configuration (PGVAULT_CONFIG, default " + DefaultConfigPath + ") that the\n" +
			"tool's own site option names, or --repo/PGVAULT_REPO. See docs/how-to/migrate-from-other-tools.md.",
		Subcommands: []*cli.Command{
			compatTranslateCommand(),
			pghoardCommand(),
			pgbackrestCommand(),
			walgCommand(),
			barmanWALArchiveCommand(),
			barmanWALRestoreCommand(),
		},
	}
}

// dropInCommand is a compat command that reads its arguments the way the
// tool it stands for does (run parses them), not urfave/cli's way.
func dropInCommand(name, usage string, run func(e *env, args []string) error) *cli.Command {
	return &cli.Command{
		Name: name, Usage: usage, ArgsUsage: "ARGS (as " + name + " takes them)",
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			return run(e, c.Args().Slice())
		},
	}
}

// dropInSite is the repository a drop-in works on: --repo/PGVAULT_REPO
// when given (with the usual password sources), else the site of the
// agent's configuration that the tool's own option names (pghoard's
// --site, pgBackRest's --stanza, Barman's server name; "" takes the only
// site). what says which option named it, for the error. The agent's site
// is nil in the first case.
func (e *env) dropInSite(name, what string) (*service.Site, *agent.Site, error) {
	if e.c.String("repo") != "" {
		s, err := e.site(askPassword)
		return s, nil, err
	}
	path := os.Getenv("PGVAULT_CONFIG")
	if path == "" {
		path = DefaultConfigPath
	}
	cfg, err := agent.Load(path, agent.LoadOptions{Strict: true})
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, usagef("no repository: set PGVAULT_CONFIG to the agent's configuration (%s does not exist) or PGVAULT_REPO", path)
		}
		return nil, nil, err
	}
	names := cfg.SiteNames()
	if name == "" {
		if len(names) != 1 {
			return nil, nil, usagef("%s has %d sites (%s): say which with %s", path, len(names), strings.Join(names, ", "), what)
		}
		name = names[0]
	}
	as, ok := cfg.Sites[name]
	if !ok || !slices.Contains(names, name) {
		return nil, nil, usagef("%s %q: no such site in %s (its sites: %s)", what, name, path, strings.Join(names, ", "))
	}
	s := as.Service()
	s.Logger, s.KeyCache = e.log, !e.c.Bool("no-key-cache")
	if d := os.Getenv("PGVAULT_CACHE_DIR"); d != "" {
		s.CacheDir = d
	}
	if err := applyTestFaults(s); err != nil {
		return nil, nil, usageError{err}
	}
	return s, as, nil
}

// foreignOption describes one option of another tool's command line.
type foreignOption struct {
	names []string // "stanza", "U": long without "--", short without "-"
	value bool     // takes a value (--name=value, --name value, -n value)
}

// foreignArgs are another tool's command line, read by parseForeign.
type foreignArgs struct {
	opts    map[string]string // by the option's first name; "true" for a switch
	ignored []string          // options given that pgvault has no use for
	pos     []string
}

func (a foreignArgs) get(name string) string { return a.opts[name] }
func (a foreignArgs) has(name string) bool   { _, ok := a.opts[name]; return ok }

// parseForeign reads args as tool does: options anywhere, "--" ending
// them. An option not in known is a usage error, unless lenient (pgBackRest
// reads most of its options from its own configuration file, so its
// command lines carry many pgvault has no use for: those are recorded in
// ignored; one written without "=" is taken as a switch).
func parseForeign(tool string, args []string, known []foreignOption, lenient bool) (foreignArgs, error) {
	out := foreignArgs{opts: map[string]string{}}
	find := func(n string) (foreignOption, bool) {
		for _, o := range known {
			if slices.Contains(o.names, n) {
				return o, true
			}
		}
		return foreignOption{}, false
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			out.pos = append(out.pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			out.pos = append(out.pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		o, ok := find(name)
		if !ok {
			if lenient && strings.HasPrefix(a, "--") {
				out.ignored = append(out.ignored, name)
				continue
			}
			return out, usagef("%s: unknown option %s", tool, a)
		}
		switch {
		case o.value && !hasVal:
			if i+1 >= len(args) {
				return out, usagef("%s: option %s needs a value", tool, a)
			}
			i++
			val = args[i]
		case !o.value && hasVal:
			return out, usagef("%s: option --%s takes no value", tool, name)
		case !o.value:
			val = "true"
		}
		out.opts[o.names[0]] = val
	}
	return out, nil
}

// wantArgs checks the count of positional arguments of a drop-in.
func wantArgs(tool, usage string, a foreignArgs, n int) error {
	if len(a.pos) != n {
		return usagef("%s: want %s, got %d arguments (%s)", tool, usage, len(a.pos), strings.Join(a.pos, " "))
	}
	return nil
}

// walInDataDir is where archive_command finds a segment named by %f
// alone (pghoard's line gives only the name): it runs in the data
// directory.
func walInDataDir(name string) string {
	return filepath.Join("pg_wal", filepath.Base(name))
}

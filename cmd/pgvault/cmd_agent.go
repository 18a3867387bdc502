package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/cmd/pgvault/agent"
)

// configCommand is a command that reads the agent's configuration file
// (--config, or PGVAULT_CONFIG) and takes no arguments: agent, status and
// doctor. needed says what the file is for when it must be given; ""
// makes it optional.
func configCommand(name, usage, description, needed string, run func(ctx context.Context, e *env, config string) error) *cli.Command {
	var config string
	return &cli.Command{
		Name: name, Usage: usage, Description: description,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, EnvVars: []string{"PGVAULT_CONFIG"}, Destination: &config,
				Usage: "the agent's YAML configuration `FILE` (default: " + DefaultConfigPath + " when it exists)"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if c.NArg() > 0 {
				return usagef("%s takes no arguments (got %q)", name, c.Args().First())
			}
			config, err = chooseConfig(config, DefaultConfigPath, name, needed)
			if err != nil {
				return err
			}
			return run(c.Context, e, config)
		},
	}
}

// DefaultConfigPath is where the agent, status and doctor look for the
// configuration when neither --config nor PGVAULT_CONFIG names one (as
// pghoard and pg_hardstorage read theirs without a flag).
const DefaultConfigPath = "/etc/pgvault/pgvault.yaml"

// chooseConfig is the configuration file a command reads: the one given,
// else def when it exists, else none ("" for a command that can run
// without one, a usage error naming both for the others).
func chooseConfig(given, def, name, needed string) (string, error) {
	if given != "" {
		return given, nil
	}
	if _, err := os.Stat(def); err == nil {
		return def, nil
	}
	if needed != "" {
		return "", usagef("%s needs --config FILE (or PGVAULT_CONFIG; %s, the default, does not exist), %s", name, def, needed)
	}
	return "", nil
}

func agentCommand() *cli.Command {
	cmd := configCommand("agent",
		"run the daemon: WAL streaming, scheduled base backups, retention, WAL checks, recovery drills, metrics and alerts",
		"Reads a YAML configuration (docs/reference/config.md) naming one or more sites. SIGHUP reloads it;\n"+
			"SIGTERM stops after the streamers have stored the WAL they received. See docs/how-to/run-the-agent.md.",
		"its configuration: see docs/reference/config.md", runAgent)
	// Only the agent checks its configuration this way: status and doctor
	// share configCommand but not this flag.
	cmd.Flags = append(cmd.Flags, &cli.BoolFlag{Name: "check-config",
		Usage: "load and validate the configuration (and its secret files) as the agent does at start, then exit: 0 if it loads, 2 with the error"})
	return cmd
}

// checkReport is the JSON document of agent --check-config.
type checkReport struct {
	OK     bool     `json:"ok"`
	Config string   `json:"config"`
	Sites  []string `json:"sites"`
}

// checkAgentConfig loads the configuration exactly as the agent does at
// start (strict: secret files readable by every user are refused),
// without starting, binding or connecting to anything.
func checkAgentConfig(e *env, config string) error {
	cfg, err := agent.Load(config, agent.LoadOptions{Strict: true})
	if err != nil {
		return usageError{err}
	}
	names := cfg.SiteNames()
	return e.out.emit(checkReport{OK: true, Config: config, Sites: names}, func(w io.Writer) {
		fmt.Fprintf(w, "configuration OK: %d sites (%s)\n", len(names), strings.Join(names, ", "))
	})
}

func runAgent(ctx context.Context, e *env, config string) error {
	if e.c.Bool("check-config") {
		return checkAgentConfig(e, config)
	}
	// Catch SIGHUP before anything else: its default action ends the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	var level slog.LevelVar
	var flagLevel slog.Level
	flagLevel.UnmarshalText([]byte(e.c.String("log-level")))
	level.Set(flagLevel)
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: &level}))
	var setLevel func(string)
	if !e.c.IsSet("log-level") { // --log-level and PGVAULT_LOG_LEVEL win over log_level
		setLevel = func(s string) {
			var l slog.Level
			if l.UnmarshalText([]byte(s)) == nil {
				level.Set(l)
			}
		}
	}
	exe, err := os.Executable()
	if err != nil {
		log.Warn("cannot find the pgvault binary; recovery drills will fail", "err", err)
		exe = ""
	}
	hook, err := testFaultsHook()
	if err != nil {
		return usageError{err}
	}
	err = agent.Run(ctx, agent.Options{
		ConfigFile: config, Logger: log, SetLogLevel: setLevel, Reload: hup,
		Executable: exe, StorageHook: hook, Version: version,
	})
	if errors.Is(err, agent.ErrConfig) {
		return usageError{err}
	}
	return err
}

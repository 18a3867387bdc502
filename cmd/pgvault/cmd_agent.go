package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/cmd/pgvault/agent"
)

// agentConfigFlag is --config, the agent's configuration file, which
// agent, status and doctor read.
func agentConfigFlag(dest *string) cli.Flag {
	return &cli.StringFlag{Name: "config", Aliases: []string{"c"}, EnvVars: []string{"PGVAULT_CONFIG"}, Destination: dest,
		Usage: "the agent's YAML configuration `FILE`"}
}

type agentOptions struct {
	config string
}

func agentCommand() *cli.Command {
	var o agentOptions
	return &cli.Command{
		Name:  "agent",
		Usage: "run the daemon: WAL streaming, scheduled base backups, retention, WAL checks, recovery drills, metrics and alerts",
		Description: "Reads a YAML configuration (docs/reference/config.md) naming one or more sites. SIGHUP reloads it;\n" +
			"SIGTERM stops after the streamers have stored the WAL they received. See docs/how-to/run-the-agent.md.",
		Flags: []cli.Flag{
			agentConfigFlag(&o.config),
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if c.NArg() > 0 {
				return usagef("agent takes no arguments (got %q)", c.Args().First())
			}
			if o.config == "" {
				return usagef("agent needs --config FILE (or PGVAULT_CONFIG): see docs/reference/config.md")
			}
			return runAgent(c.Context, e, o)
		},
	}
}

func runAgent(ctx context.Context, e *env, o agentOptions) error {
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
		ConfigFile: o.config, Logger: log, SetLogLevel: setLevel, Reload: hup,
		Executable: exe, StorageHook: hook, Version: version,
	})
	if errors.Is(err, agent.ErrConfig) {
		return usageError{err}
	}
	return err
}

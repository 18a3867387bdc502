package main

import "github.com/urfave/cli/v2"

// compatCommand groups what eases the move from another backup tool.
func compatCommand() *cli.Command {
	return &cli.Command{
		Name:        "compat",
		Usage:       "move from pghoard, pgBackRest, Barman or WAL-G: translate their configuration",
		Subcommands: []*cli.Command{compatTranslateCommand()},
	}
}

package main

import "github.com/urfave/cli/v2"

func repoCommand() *cli.Command {
	return &cli.Command{
		Name:  "repo",
		Usage: "create and maintain the repository",
		Subcommands: []*cli.Command{
			repoInitCommand(),
			repoCheckCommand(),
			repoStatsCommand(),
			repoUnlockCommand(),
			repoRebuildIndexCommand(),
			repoKeyCommand(),
		},
	}
}

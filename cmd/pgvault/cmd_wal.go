package main

import "github.com/urfave/cli/v2"

func walCommand() *cli.Command {
	return &cli.Command{
		Name:  "wal",
		Usage: "archive and fetch WAL: stream it, push and fetch it (archive_command/restore_command), check for gaps",
		Subcommands: []*cli.Command{
			walStreamCommand(),
			walPushCommand(),
			walFetchCommand(),
			walPrefetchCommand(),
			walCheckCommand(),
			walPreflightCommand(),
		},
	}
}

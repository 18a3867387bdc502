package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// interspersed lets flags follow positional arguments, as in
// `pgvault restore latest --target DIR`: urfave/cli (like the flag
// package) stops parsing flags at the first positional argument, so the
// command's flags are moved in front of its positional arguments.
func interspersed(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	i := 1
	flags := app.Flags
	cmds := app.Commands
	// Global flags, then the command path.
	for i < len(args) {
		a := args[i]
		if strings.HasPrefix(a, "-") && a != "-" {
			out = append(out, a)
			if takesValue(flags, a) && i+1 < len(args) {
				out = append(out, args[i+1])
				i++
			}
			i++
			continue
		}
		cmd := findCommand(cmds, a)
		if cmd == nil {
			break
		}
		out = append(out, a)
		i++
		if cmd.SkipFlagParsing {
			return append(out, args[i:]...) // a drop-in reads its own arguments
		}
		flags, cmds = cmd.Flags, cmd.Subcommands
		if len(cmds) == 0 {
			break
		}
	}
	var movedFlags, positional []string
	for i < len(args) {
		a := args[i]
		switch {
		case a == "--":
			positional = append(positional, args[i:]...)
			i = len(args)
			continue
		case strings.HasPrefix(a, "-") && a != "-":
			movedFlags = append(movedFlags, a)
			if takesValue(flags, a) && i+1 < len(args) {
				movedFlags = append(movedFlags, args[i+1])
				i++
			}
		default:
			positional = append(positional, a)
		}
		i++
	}
	out = append(out, movedFlags...)
	return append(out, positional...)
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.Name == name {
			return c
		}
		for _, alias := range c.Aliases {
			if alias == name {
				return c
			}
		}
	}
	return nil
}

// takesValue reports whether flag token a ("--name" or "-n") consumes the
// next argument: it is a known non-boolean flag written without "=".
func takesValue(flags []cli.Flag, a string) bool {
	name := strings.TrimLeft(a, "-")
	if strings.Contains(name, "=") {
		return false
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				_, isBool := f.(*cli.BoolFlag)
				return !isBool
			}
		}
	}
	return false
}

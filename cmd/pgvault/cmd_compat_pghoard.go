package main

import (
	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/stream"
)

// pghoardCommand answers pghoard_postgres_command's two lines:
//
//	archive_command = 'pghoard_postgres_command --mode archive --site S --xlog %f'
//	restore_command = 'pghoard_postgres_command --mode restore --site S --xlog %f --output %p'
//
// pghoard's command hands the file to its daemon over HTTP (--host,
// --port); pgvault stores it itself, so those are accepted and unused.
func pghoardCommand() *cli.Command {
	return dropInCommand("pghoard", "pghoard_postgres_command: --mode archive|restore --site S --xlog %f [--output %p]", runPghoard)
}

var pghoardOptions = []foreignOption{
	{names: []string{"mode"}, value: true},
	{names: []string{"site"}, value: true},
	{names: []string{"xlog"}, value: true},
	{names: []string{"output"}, value: true},
	{names: []string{"host"}, value: true},
	{names: []string{"port"}, value: true},
	{names: []string{"verbose"}},
}

func runPghoard(e *env, args []string) error {
	const tool = "pghoard_postgres_command"
	a, err := parseForeign(tool, args, pghoardOptions, false)
	if err != nil {
		return err
	}
	if len(a.pos) > 0 {
		return usagef("%s: unexpected argument %q", tool, a.pos[0])
	}
	xlog := a.get("xlog")
	if xlog == "" {
		return usagef("%s: --xlog %%f is missing", tool)
	}
	switch a.get("mode") {
	case "archive":
		path := walInDataDir(xlog)
		if err := checkWALPath(path); err != nil {
			return err
		}
		site, _, err := e.dropInSite(a.get("site"), "--site")
		if err != nil {
			return err
		}
		return pushWAL(e.c.Context, e, site, path)
	case "restore":
		out := a.get("output")
		if out == "" {
			return usagef("%s: --mode restore needs --output %%p", tool)
		}
		if err := checkWALName(xlog); err != nil {
			return err
		}
		site, _, err := e.dropInSite(a.get("site"), "--site")
		if err != nil {
			return err
		}
		return fetchWAL(e.c.Context, e, site, xlog, out, walFetchOptions{prefetch: stream.DefaultPrefetch})
	case "":
		return usagef("%s: --mode archive or --mode restore is missing", tool)
	default:
		return usagef("%s: --mode %q: use archive or restore", tool, a.get("mode"))
	}
}

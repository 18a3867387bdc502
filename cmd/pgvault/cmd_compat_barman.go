package main

import (
	"fmt"
	"io"

	"github.com/pgvault/pgvault/internal/service"
	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/stream"
)

// barman-wal-archive and barman-wal-restore (barman-cli) send WAL to and
// from a Barman server over SSH: BARMAN_HOST names it. pgvault writes the
// repository itself, so the host and the SSH and compression options are
// accepted and unused; SERVER_NAME is the site.
//
//	archive_command = 'barman-wal-archive backup-host pg %p'
//	restore_command = 'barman-wal-restore -U barman backup-host pg %f %p'

var barmanCommonOptions = []foreignOption{
	{names: []string{"user", "U"}, value: true},
	{names: []string{"port"}, value: true},
	{names: []string{"config", "c"}, value: true},
	{names: []string{"test", "t"}},
	{names: []string{"gzip", "z"}},
	{names: []string{"bzip2", "j"}},
	{names: []string{"xz"}},
	{names: []string{"snappy"}},
	{names: []string{"zstd"}},
	{names: []string{"lz4"}},
	{names: []string{"verbose", "v"}},
}

var barmanRestoreOptions = append([]foreignOption{
	{names: []string{"sleep", "s"}, value: true},
	{names: []string{"parallel", "p"}, value: true},
	{names: []string{"spool-dir"}, value: true},
	{names: []string{"partial", "P"}},
}, barmanCommonOptions...)

func barmanWALArchiveCommand() *cli.Command {
	return dropInCommand("barman-wal-archive", "barman-wal-archive [options] BARMAN_HOST SERVER_NAME WAL_PATH", func(e *env, args []string) error {
		const tool = "barman-wal-archive"
		a, err := parseForeign(tool, args, barmanCommonOptions, false)
		if err != nil {
			return err
		}
		if a.has("test") {
			return barmanTest(e, tool, a, "BARMAN_HOST SERVER_NAME")
		}
		if err := wantArgs(tool, "BARMAN_HOST SERVER_NAME WAL_PATH", a, 3); err != nil {
			return err
		}
		if err := checkWALPath(a.pos[2]); err != nil {
			return err
		}
		site, _, err := e.dropInSite(a.pos[1], "SERVER_NAME")
		if err != nil {
			return err
		}
		return pushWAL(e.c.Context, e, site, a.pos[2])
	})
}

func barmanWALRestoreCommand() *cli.Command {
	return dropInCommand("barman-wal-restore", "barman-wal-restore [options] BARMAN_HOST SERVER_NAME WAL_NAME WAL_DEST", func(e *env, args []string) error {
		const tool = "barman-wal-restore"
		a, err := parseForeign(tool, args, barmanRestoreOptions, false)
		if err != nil {
			return err
		}
		if a.has("test") {
			return barmanTest(e, tool, a, "BARMAN_HOST SERVER_NAME")
		}
		if err := wantArgs(tool, "BARMAN_HOST SERVER_NAME WAL_NAME WAL_DEST", a, 4); err != nil {
			return err
		}
		if err := checkWALName(a.pos[2]); err != nil {
			return err
		}
		site, _, err := e.dropInSite(a.pos[1], "SERVER_NAME")
		if err != nil {
			return err
		}
		return fetchWAL(e.c.Context, e, site, a.pos[2], a.pos[3], walFetchOptions{prefetch: stream.DefaultPrefetch})
	})
}

// barmanTest answers --test (barman-cli's check that the server can be
// reached): the site's repository opens with its password.
func barmanTest(e *env, tool string, a foreignArgs, usage string) error {
	if len(a.pos) < 2 {
		return usagef("%s --test: want %s", tool, usage)
	}
	site, _, err := e.dropInSite(a.pos[1], "SERVER_NAME")
	if err != nil {
		return err
	}
	r, err := site.Open(e.c.Context, service.Access{SkipIndex: true})
	if err != nil {
		return err
	}
	r.Close()
	return e.out.emit(map[string]string{"repository": site.RedactedRepo(), "status": "ok"}, func(w io.Writer) {
		fmt.Fprintf(w, "Ready to accept WAL files for the server %s (%s)\n", a.pos[1], site.RedactedRepo())
	})
}

package main

import (
	"io"
	"log/slog"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/internal/service"
)

func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "repo", Aliases: []string{"r"}, EnvVars: []string{"PGVAULT_REPO"},
			Usage: "repository `URL`: file:///path, a path, s3://bucket/prefix?endpoint=..., gs://bucket/prefix, azure://container/prefix, swift://container/prefix, sftp://user@host:port/path"},
		&cli.StringFlag{Name: "password-file", EnvVars: []string{"PGVAULT_PASSWORD_FILE"},
			Usage: "read the repository password from `FILE` (or set PGVAULT_PASSWORD)"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "output format: text, json, or ndjson (one JSON event per line: progress, then the result)"},
		&cli.StringFlag{Name: "log-level", Value: "warn", EnvVars: []string{"PGVAULT_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
		&cli.StringFlag{Name: "cache-dir", EnvVars: []string{"PGVAULT_CACHE_DIR"},
			Usage: "local cache `DIR` (index tables); default $XDG_CACHE_HOME/pgvault"},
		&cli.BoolFlag{Name: "no-key-cache", EnvVars: []string{"PGVAULT_NO_KEY_CACHE"},
			Usage: "do not keep the key derived from --password-file in the cache folder (every command then runs the KDF, ~40 ms or more)"},
		&cli.IntFlag{Name: "compression-level", Value: chunk.DefaultLevel, Usage: "zstd `LEVEL` for new data (1 fastest .. 19 smallest)"},
		&cli.StringFlag{Name: "pg", EnvVars: []string{"PGVAULT_PG"},
			Usage: "PostgreSQL `CONNINFO` (\"host=... port=... user=...\" or a postgres:// URL); PG* environment variables fill in the rest"},
	}
}

// env carries what every command needs, built from the global flags.
type env struct {
	c      *cli.Context
	out    *printer
	log    *slog.Logger
	stdin  io.Reader
	stderr io.Writer
}

func newEnv(c *cli.Context) (*env, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, usagef("--log-level %q: use debug, info, warn or error", c.String("log-level"))
	}
	out, err := newPrinter(c.String("output"), c.App.Writer)
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: level}))
	return &env{c: c, out: out, log: log, stdin: c.App.Reader, stderr: c.App.ErrWriter}, nil
}

// passwordNeed says whether a command reads the repository password.
type passwordNeed int

const (
	askPassword     passwordNeed = iota // from the environment, the file or a prompt
	confirmPassword                     // the same, asked twice at a prompt (repo init)
	noPassword                          // none (an unencrypted repo init)
)

// site describes the repository the global flags name, with its password
// (read now: from PGVAULT_PASSWORD, --password-file, or a prompt on a
// terminal). A missing --repo is a usage error.
func (e *env) site(need passwordNeed) (*service.Site, error) {
	u := e.c.String("repo")
	if u == "" {
		return nil, usagef("no repository given: use --repo URL or set PGVAULT_REPO")
	}
	var pw service.Password
	if need != noPassword {
		src := service.PasswordSource{Env: os.Getenv(service.PasswordEnv), File: e.c.String("password-file"), Prompt: e.stderr, Confirm: need == confirmPassword}
		if f, ok := e.stdin.(*os.File); ok {
			src.Terminal = f
		}
		var err error
		if pw, err = service.ReadPassword(src); err != nil {
			return nil, err
		}
	}
	s := &service.Site{
		Repo: u, Password: pw, CompressionLevel: e.c.Int("compression-level"),
		KeyCache: !e.c.Bool("no-key-cache"), Logger: e.log,
	}
	if e.c.IsSet("cache-dir") || os.Getenv("PGVAULT_CACHE_DIR") != "" {
		s.CacheDir = e.c.String("cache-dir")
	}
	if err := applyTestFaults(s); err != nil {
		return nil, usageError{err}
	}
	return s, nil
}

// applyTestFaults lets the test build's fault injection wrap the site's
// storage (faults_test_build.go); the release build has none.
func applyTestFaults(s *service.Site) error {
	hook, err := testFaultsHook()
	if hook != nil {
		hook(s)
	}
	return err
}

// cacheDir is the cache folder this command uses.
func (e *env) cacheDir() string {
	if d := e.c.String("cache-dir"); d != "" {
		return d
	}
	return service.DefaultCacheDir()
}

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/all"
)

func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "repo", Aliases: []string{"r"}, EnvVars: []string{"PGVAULT_REPO"},
			Usage: "repository `URL`: file:///path, a path, s3://bucket/prefix?endpoint=..., sftp://user@host:port/path"},
		&cli.StringFlag{Name: "password-file", EnvVars: []string{"PGVAULT_PASSWORD_FILE"},
			Usage: "read the repository password from `FILE` (or set PGVAULT_PASSWORD)"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "output format: text or json"},
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

// repoURL returns --repo or a usage error saying how to give it.
func (e *env) repoURL() (string, error) {
	u := e.c.String("repo")
	if u == "" {
		return "", usagef("no repository given: use --repo URL or set PGVAULT_REPO")
	}
	return u, nil
}

// openBackend opens the storage named by --repo.
func (e *env) openBackend(ctx context.Context, create bool) (backend.Backend, error) {
	u, err := e.repoURL()
	if err != nil {
		return nil, err
	}
	be, err := all.Open(ctx, u, all.Options{Create: create})
	if errors.Is(err, all.ErrBadURL) {
		return nil, usageError{err}
	}
	if err != nil {
		return nil, err
	}
	return withTestFaults(be) // a no-op unless PGVAULT_TEST_FAULTS is set (tests only)
}

// cacheDir is --cache-dir or the user's cache folder.
func (e *env) cacheDir() string {
	if d := e.c.String("cache-dir"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "pgvault")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("pgvault-cache-%d", os.Getuid()))
}

// openRepo opens the repository with the password from the environment.
func (e *env) openRepo(ctx context.Context) (*repo.Repository, error) {
	return e.open(ctx, false)
}

// openRepoForRepair opens without reading the index.
func (e *env) openRepoForRepair(ctx context.Context) (*repo.Repository, error) {
	return e.openWith(ctx, repo.Options{SkipIndex: true})
}

// openConcurrentWriter opens for a writer that may run during prune (WAL
// streaming and archiving): see repo.Options.ConcurrentWriter.
func (e *env) openConcurrentWriter(ctx context.Context) (*repo.Repository, error) {
	return e.openWith(ctx, repo.Options{ConcurrentWriter: true})
}

func (e *env) open(ctx context.Context, skipIndex bool) (*repo.Repository, error) {
	return e.openWith(ctx, repo.Options{SkipIndex: skipIndex})
}

func (e *env) openWith(ctx context.Context, opts repo.Options) (*repo.Repository, error) {
	be, err := e.openBackend(ctx, false)
	if err != nil {
		return nil, err
	}
	// An unencrypted repository needs no password, so a missing one is
	// only an error once the repository says it is encrypted.
	pw, pwErr := e.password(false)
	if pwErr != nil && !errors.Is(pwErr, repo.ErrNoPassword) {
		be.Close()
		return nil, pwErr
	}
	opts.CacheDir = e.cacheDir()
	opts.CompressionLevel = e.c.Int("compression-level")
	opts.Logger = e.log
	opts.KeyCache = e.keyCache()
	r, err := repo.Open(ctx, be, pw, opts)
	if errors.Is(err, repo.ErrNoPassword) && pwErr != nil {
		err = pwErr
	}
	if err != nil {
		be.Close()
		return nil, err
	}
	return r, nil
}

// keyCache returns the cache of the key derived from the password when
// the password comes from --password-file (the way archive_command and
// restore_command run, over and over): the entries live in the private
// cache folder of the user who can read that file, and are tagged with
// the file's identity (path, inode, size, modification time), so editing
// or replacing the file makes them void. A password from the environment
// or a prompt is never cached.
func (e *env) keyCache() repo.KeyCache {
	if e.c.Bool("no-key-cache") {
		return nil
	}
	if pw, ok := os.LookupEnv("PGVAULT_PASSWORD"); ok && pw != "" {
		return nil
	}
	name := e.c.String("password-file")
	if name == "" {
		return nil
	}
	abs, err := filepath.Abs(name)
	if err != nil {
		return nil
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	tag := fmt.Sprintf("%s dev=%d ino=%d size=%d mtime=%d", abs, st.Dev, st.Ino, fi.Size(), fi.ModTime().UnixNano())
	return repo.DirKeyCache{Dir: e.cacheDir(), Tag: tag}
}

// password reads the repository password: PGVAULT_PASSWORD, then
// --password-file, then a prompt when stdin is a terminal. It is never a
// flag, so it cannot show up in ps output.
func (e *env) password(confirm bool) ([]byte, error) {
	if pw, ok := os.LookupEnv("PGVAULT_PASSWORD"); ok && pw != "" {
		return []byte(pw), nil
	}
	if name := e.c.String("password-file"); name != "" {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("read password file: %w", err)
		}
		line, _, _ := strings.Cut(string(data), "\n")
		line = strings.TrimRight(line, "\r")
		if line == "" {
			return nil, fmt.Errorf("password file %s is empty", name)
		}
		return []byte(line), nil
	}
	f, ok := e.stdin.(*os.File)
	if !ok || !isTerminal(f) {
		return nil, fmt.Errorf("%w: use --password-file FILE or set PGVAULT_PASSWORD", repo.ErrNoPassword)
	}
	pw, err := prompt(f, e.stderr, "repository password: ")
	if err != nil {
		return nil, err
	}
	if confirm {
		again, err := prompt(f, e.stderr, "repeat password: ")
		if err != nil {
			return nil, err
		}
		if string(again) != string(pw) {
			return nil, errors.New("the passwords do not match")
		}
	}
	if len(pw) == 0 {
		return nil, repo.ErrNoPassword
	}
	return pw, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// prompt reads a line from the terminal with echo off.
func prompt(f *os.File, w io.Writer, label string) ([]byte, error) {
	fmt.Fprint(w, label)
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	noEcho := *old
	noEcho.Lflag &^= unix.ECHO
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho); err != nil {
		return nil, err
	}
	defer func() {
		unix.IoctlSetTermios(fd, unix.TCSETS, old)
		fmt.Fprintln(w)
	}()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && line == "" {
		return nil, fmt.Errorf("read password: %w", err)
	}
	return []byte(strings.TrimRight(line, "\r\n")), nil
}

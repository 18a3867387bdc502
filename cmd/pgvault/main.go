// Command pgvault backs up PostgreSQL into a deduplicating, encrypted
// repository and gives backups back as restored or mounted data
// directories. See docs/reference/cli.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/internal/service"
)

// Exit codes (the CLI contract).
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 2
	exitProblems = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := startProfile(os.Getenv("PGVAULT_CPUPROFILE"))
	// A password given on the command line (--pg "... password=...")
	// is blanked in the process's argument memory: ps shows no secret.
	code := run(ctx, scrubArgs(os.Args), os.Stdin, os.Stdout, os.Stderr)
	stopProfile()
	stop()
	os.Exit(code)
}

// startProfile writes a CPU profile to path when it is set (for the
// benchmarks: PGVAULT_CPUPROFILE=/tmp/backup.prof pgvault backup ...).
func startProfile(path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgvault: cpu profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "pgvault: cpu profile:", err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// usageError marks a mistake in how the command was called (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// problemsf reports that a check ran and found problems (exit 3).
func problemsf(format string, args ...any) error {
	return &service.Problems{Msg: fmt.Sprintf(format, args...)}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := newApp(stdin, stdout, stderr)
	// urfave/cli returns no error for an unknown command: remember it, so
	// that `pgvault bogus` exits 2 like any other usage mistake.
	notFound := false
	printNotFound := app.CommandNotFound
	app.CommandNotFound = func(c *cli.Context, name string) { notFound = true; printNotFound(c, name) }
	err := app.RunContext(ctx, interspersed(app, multicall(args)))
	if notFound && err == nil {
		return exitUsage
	}
	return report(err, stderr)
}

// report prints err as one line and returns the exit code for it.
func report(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var ec exitCode
	if errors.As(err, &ec) {
		return int(ec) // a pgvault process run on our behalf has said why
	}
	var pe *service.Problems
	if errors.As(err, &pe) {
		fmt.Fprintln(stderr, "pgvault: "+oneLine(pe.Msg))
		return exitProblems
	}
	code := exitFailure
	var ue usageError
	// A malformed repository URL or connection string is a usage mistake
	// wherever it is found.
	if errors.As(err, &ue) || errors.Is(err, service.ErrBadRepoURL) || errors.Is(err, pg.ErrBadConninfo) || errors.Is(err, service.ErrUnknownUser) {
		code = exitUsage
	}
	msg := explain(err)
	fmt.Fprintln(stderr, "pgvault: "+oneLine(msg))
	return code
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:                 "pgvault",
		Usage:                "PostgreSQL backups you can mount: deduplicated, encrypted, instant restore",
		Version:              version,
		Reader:               stdin,
		Writer:               stdout,
		ErrWriter:            stderr,
		Flags:                globalFlags(),
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		ExitErrHandler:       func(*cli.Context, error) {}, // main decides exit codes
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError{err}
		},
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(stderr, "pgvault: unknown command %q (see `pgvault --help`)\n", name)
		},
		Commands: []*cli.Command{
			repoCommand(),
			backupCommand(),
			listCommand(),
			restoreCommand(),
			walCommand(),
			pruneCommand(),
			mountCommand(),
			umountCommand(),
			verifyCommand(),
			dumpCommand(),
			agentCommand(),
			statusCommand(),
			doctorCommand(),
			compatCommand(),
			demoCommand(),
			initCommand(),
		},
	}
	setUsageErrors(app.Commands)
	return app
}

// setUsageErrors makes flag mistakes in every subcommand exit 2.
func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return usageError{err} }
		setUsageErrors(c.Subcommands)
	}
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

package pgtest

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// pgbench returns a pgbench command against database postgres. pgbench is
// a client: it runs as this process's user and connects over TCP.
func (c *Cluster) pgbench(ctx context.Context, args ...string) *exec.Cmd {
	all := append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(c.port), "-U", "postgres"}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(BinDir, "pgbench"), append(all, "postgres")...)
	cmd.Env = clientEnv()
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// PgbenchInit creates pgbench's tables at the given scale in database
// postgres (pgbench -i -s scale -q; scale 1 is 100,000 accounts, ~15 MB).
func (c *Cluster) PgbenchInit(t testing.TB, scale int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	if out, err := run(c.pgbench(ctx, "-i", "-s", strconv.Itoa(scale), "-q")); err != nil {
		t.Fatalf("pgtest: pgbench init: %v\n%s", err, out)
	}
}

// Pgbench runs pgbench with args (e.g. "-T", "5", "-c", "2") against
// database postgres and returns its output.
func (c *Cluster) Pgbench(ctx context.Context, t testing.TB, args ...string) string {
	t.Helper()
	out, err := run(c.pgbench(ctx, args...))
	if err != nil {
		t.Fatalf("pgtest: pgbench: %v\n%s", err, out)
	}
	return out
}

// PgbenchBackground starts pgbench with args against database postgres and
// lets it run until ctx is cancelled (args without -T/-t get -T 86400).
// The returned wait, to be called from the test's goroutine after
// cancelling ctx (or once a -T run has had its time), waits for pgbench to
// end and returns its output; it fails the test if pgbench failed before
// ctx was cancelled. If wait is never called, pgbench is killed when the
// test ends.
func (c *Cluster) PgbenchBackground(ctx context.Context, t testing.TB, args ...string) (wait func() string) {
	t.Helper()
	if !hasDuration(args) {
		args = append(args, "-T", "86400")
	}
	runCtx, kill := context.WithCancel(ctx)
	cmd := c.pgbench(runCtx, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		kill()
		t.Fatalf("pgtest: start pgbench: %v", err)
	}
	var (
		once    sync.Once
		waitErr error
	)
	finish := func() {
		once.Do(func() {
			waitErr = cmd.Wait()
			kill()
		})
	}
	t.Cleanup(func() { kill(); finish() })
	return func() string {
		t.Helper()
		finish()
		if waitErr != nil && ctx.Err() == nil {
			t.Fatalf("pgtest: pgbench %s: %v\n%s", strings.Join(args, " "), waitErr, out.String())
		}
		return out.String()
	}
}

// hasDuration reports whether pgbench args set a duration or a
// transaction count.
func hasDuration(args []string) bool {
	for _, a := range args {
		for _, p := range []string{"-T", "-t", "--time", "--transactions"} {
			if strings.HasPrefix(a, p) {
				return true
			}
		}
	}
	return false
}

package pgdump

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ErrTooOld is matched when the pg_dump found is of an older major than
// the server: it refuses to dump a newer server, and would only after
// the server had been started and recovered.
var ErrTooOld = errors.New("pg_dump is older than the server")

// Program is a pg_dump (or pg_dumpall) and the major it belongs to.
type Program struct {
	Path  string
	Major int
}

// Find returns the program name (pg_dump or pg_dumpall) that can dump a
// server of major serverMajor: in dir when given (it must hold it), else
// found by find (the server's folder first, then the newest on this
// host). One older than the server is an ErrTooOld error naming the fix.
func Find(ctx context.Context, name, dir string, serverMajor int, find func(name string) (string, bool)) (Program, error) {
	var path string
	if dir != "" {
		path = filepath.Join(dir, name)
		if fi, err := os.Stat(path); err != nil || fi.IsDir() {
			return Program{}, fmt.Errorf("--pg-dump %s holds no %s: give the folder of PostgreSQL %d's (or a newer major's) client programs", dir, name, serverMajor)
		}
	} else {
		var ok bool
		if path, ok = find(name); !ok {
			return Program{}, fmt.Errorf("%s not found: install PostgreSQL %d's client programs (postgresql-client-%d) or give --pg-dump DIR", name, serverMajor, serverMajor)
		}
	}
	major, err := Major(ctx, path)
	if err != nil {
		return Program{}, err
	}
	if major < serverMajor {
		return Program{}, fmt.Errorf("%w: %s is PostgreSQL %d's and the backup is of PostgreSQL %d: install postgresql-client-%d (or newer) and give --pg-dump DIR", ErrTooOld, path, major, serverMajor, serverMajor)
	}
	return Program{Path: path, Major: major}, nil
}

// Major is the major version a PostgreSQL program reports with
// --version ("pg_dump (PostgreSQL) 15.10 (Debian 15.10-1)" is 15).
func Major(ctx context.Context, path string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("%s --version: %w", path, err)
	}
	m, ok := parseMajor(string(out))
	if !ok {
		return 0, fmt.Errorf("%s --version printed %q: not a PostgreSQL program", path, strings.TrimSpace(string(out)))
	}
	return m, nil
}

func parseMajor(version string) (int, bool) {
	_, rest, ok := strings.Cut(version, "(PostgreSQL) ")
	if !ok {
		return 0, false
	}
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	m, err := strconv.Atoi(rest[:end])
	return m, err == nil && m > 0
}

// run runs prog with args and a clean environment (no PG* variable or
// service file of the caller's steers it to another server), sending its
// standard output to out (nil: the program writes its own file) and
// returning the bytes sent; a failure carries the last lines it printed.
func run(ctx context.Context, prog Program, args []string, out io.Writer) (int64, error) {
	cmd := exec.CommandContext(ctx, prog.Path, args...)
	cmd.Dir = "/"
	cmd.WaitDelay = 10 * time.Second
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cw := &countingWriter{w: out}
	if out != nil {
		cmd.Stdout = cw
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return cw.n, ctx.Err()
		}
		msg := strings.TrimSpace(stderr.String())
		if lines := strings.Split(msg, "\n"); len(lines) > 3 {
			msg = strings.Join(lines[len(lines)-3:], " | ")
		}
		return cw.n, fmt.Errorf("%s failed: %w: %s", filepath.Base(prog.Path), err, msg)
	}
	return cw.n, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/stream"
	"github.com/pgvault/pgvault/stream/wal"
)

// prefetchAwait bounds the wait for a segment the prefetcher is
// downloading; past it, wal fetch downloads the segment itself.
const prefetchAwait = 10 * time.Second

// spoolMaxAge is how long a prefetched segment may wait in the spool.
const spoolMaxAge = 30 * time.Minute

type walFetchOptions struct {
	prefetch int
}

func walFetchCommand() *cli.Command {
	var o walFetchOptions
	return &cli.Command{
		Name:      "fetch",
		Usage:     "write one archived WAL file to DEST (restore_command = 'pgvault wal fetch %f %p'); exit 1 if it is not archived",
		ArgsUsage: "NAME DEST",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "prefetch", Value: stream.DefaultPrefetch, Destination: &o.prefetch,
				Usage: "fetch the next `N` segments ahead in the background into the local spool (0: off)"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if c.NArg() != 2 {
				return usagef("wal fetch takes a WAL file name and a destination (restore_command = 'pgvault wal fetch %%f %%p'), got %d arguments", c.NArg())
			}
			if o.prefetch < 0 {
				return usagef("--prefetch %d: must be 0 (off) or more", o.prefetch)
			}
			return runWALFetch(c.Context, e, c.Args().Get(0), c.Args().Get(1), o)
		},
	}
}

type walFetchReport struct {
	*stream.FetchResult
	Dest       string  `json:"dest"`
	Prefetcher bool    `json:"prefetcher_started"`
	Seconds    float64 `json:"seconds"`
}

func runWALFetch(ctx context.Context, e *env, name, dest string, o walFetchOptions) error {
	start := time.Now()
	kind := wal.Classify(name)
	if kind == wal.KindInvalid {
		return usagef("wal fetch: %q is not a WAL file name (a 24-hex segment, a .partial segment, TTTTTTTT.history or a .backup file)", name)
	}
	emit := func(res *stream.FetchResult, started bool) error {
		return e.out.emit(walFetchReport{FetchResult: res, Dest: dest, Prefetcher: started, Seconds: time.Since(start).Seconds()},
			func(io.Writer) {}) // restore_command: PostgreSQL logs what it restored
	}

	// Before any key derivation: the spool (found through the plaintext
	// config) and whether the file is archived at all (object names).
	be, err := e.openBackend(ctx, false)
	if err != nil {
		return err
	}
	id, err := readRepoID(ctx, be)
	if err != nil {
		be.Close()
		return err
	}
	var spool *stream.Spool
	if kind == wal.KindSegment {
		spool = e.walSpool(id)
	}
	if spool != nil {
		// A segment the prefetcher is downloading right now comes sooner
		// from there than from a second download beside it.
		spool.Await(name, prefetchAwait)
		res, ok, err := spool.Take(name, dest)
		if err != nil {
			be.Close()
			return err
		}
		if ok {
			be.Close()
			spool.Want(name, res.SegmentSize)
			spool.Clean(name, spoolMaxAge, time.Now())
			started := false
			if o.prefetch > 0 && spool.Ahead(name) < (o.prefetch+1)/2 && !spool.PrefetchRunning() {
				started = e.startPrefetcher(name, res.SegmentSize, o.prefetch)
			}
			return emit(res, started)
		}
	}
	archived, err := stream.Archived(ctx, be, name)
	be.Close()
	if err == nil && !archived {
		return notArchived(name, kind)
	}

	r, err := e.openRepo(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	data, res, err := stream.Fetch(ctx, r, name)
	if errors.Is(err, repo.ErrWALNotFound) {
		return notArchived(name, kind)
	}
	if err != nil {
		return fmt.Errorf("wal fetch %s: %w", name, err)
	}
	if err := stream.WriteFileAtomic(dest, data, 0o600); err != nil {
		return fmt.Errorf("wal fetch: %w", err)
	}
	started := false
	if spool != nil {
		spool.Want(name, res.SegmentSize)
		spool.Clean(name, spoolMaxAge, time.Now())
		if o.prefetch > 0 && !res.FromPartial && !spool.PrefetchRunning() {
			started = e.startPrefetcher(name, res.SegmentSize, o.prefetch)
		}
	}
	return emit(res, started)
}

// notArchived is the mild one-line answer PostgreSQL gets, and logs, for a
// file the repository does not hold: recovery asks for the next segment
// until there is none, and for newer timelines' history files.
func notArchived(name string, kind wal.FileKind) error {
	why := ""
	switch kind {
	case wal.KindSegment:
		why = " (the normal end of archive recovery)"
	case wal.KindHistory:
		why = " (normal: PostgreSQL looks for newer timelines)"
	}
	return fmt.Errorf("WAL file %s is not in the repository%s", name, why)
}

// readRepoID reads the repository id from the plaintext config object.
func readRepoID(ctx context.Context, be backend.Backend) (string, error) {
	data, err := be.Load(ctx, backend.Handle{Type: backend.ConfigFile}, 0, 0)
	if errors.Is(err, backend.ErrNotFound) {
		return "", fmt.Errorf("%w at %s (no config object): check --repo", repo.ErrNotRepository, be.Location())
	}
	if err != nil {
		return "", fmt.Errorf("open repository at %s: %w", be.Location(), err)
	}
	cfg, err := repo.ParseConfig(data)
	if err != nil {
		return "", fmt.Errorf("repository at %s: %w", be.Location(), err)
	}
	return cfg.ID, nil
}

// walSpool opens the WAL spool of repository id under the cache folder.
// restore_command runs as the postgres OS user, whose HOME may be unset or
// not writable: then a private folder in the temp dir named by uid is used,
// and --cache-dir is pointed at it so the index cache lands there too. It
// returns nil (no spool, no prefetch) when no folder is usable or safe.
func (e *env) walSpool(id string) *stream.Spool {
	candidates := []string{e.cacheDir()}
	if tmp := filepath.Join(os.TempDir(), fmt.Sprintf("pgvault-cache-%d", os.Geteuid())); tmp != candidates[0] {
		candidates = append(candidates, tmp)
	}
	var firstErr error
	for _, dir := range candidates {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			firstErr = keepFirst(firstErr, err)
			continue
		}
		s, err := stream.OpenSpool(dir, id)
		if err != nil {
			firstErr = keepFirst(firstErr, err)
			continue
		}
		if dir != candidates[0] {
			e.c.Set("cache-dir", dir)
		}
		return s
	}
	e.log.Warn("no usable WAL spool: fetching without prefetch", "err", firstErr)
	return nil
}

// keepFirst returns first, or err when there is no first error yet.
func keepFirst(first, err error) error {
	if first == nil {
		return err
	}
	return first
}

// startPrefetcher starts a detached `pgvault wal prefetch` (its own
// session, stdio on /dev/null, not waited for) that fills the spool with
// the segments after name. The child gets the repository, cache folder and
// password file through the environment, so nothing new shows in ps. It
// reports whether the process started.
func (e *env) startPrefetcher(name string, segSize uint64, count int) bool {
	exe, err := os.Executable()
	if err != nil {
		e.log.Warn("cannot start the WAL prefetcher", "err", err)
		return false
	}
	env := os.Environ()
	if u := e.c.String("repo"); u != "" {
		env = append(env, "PGVAULT_REPO="+absIfPath(u))
	}
	env = append(env, "PGVAULT_CACHE_DIR="+absIfPath(e.cacheDir()), "PGVAULT_LOG_LEVEL="+e.c.String("log-level"))
	if pf := e.c.String("password-file"); pf != "" {
		env = append(env, "PGVAULT_PASSWORD_FILE="+absIfPath(pf))
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		e.log.Warn("cannot start the WAL prefetcher", "err", err)
		return false
	}
	defer null.Close()
	cmd := exec.Command(exe, "wal", "prefetch", "--after", name,
		"--segment-size", strconv.FormatUint(segSize, 10), "--count", strconv.Itoa(count))
	cmd.Env = env
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		e.log.Warn("cannot start the WAL prefetcher", "err", err)
		return false
	}
	cmd.Process.Release()
	return true
}

// absIfPath makes a relative file path absolute (the prefetcher runs in
// "/"); URLs and absolute paths are returned as they are.
func absIfPath(s string) string {
	if s == "" || filepath.IsAbs(s) || hasScheme(s) {
		return s
	}
	if a, err := filepath.Abs(s); err == nil {
		return a
	}
	return s
}

func hasScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ':':
			return i > 0 && i+2 < len(s) && s[i+1] == '/' && s[i+2] == '/'
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '+', c == '-', c == '.':
		default:
			return false
		}
	}
	return false
}

type walPrefetchOptions struct {
	after   string
	segSize uint64
	count   int
}

// walPrefetchCommand is the hidden background half of wal fetch.
func walPrefetchCommand() *cli.Command {
	var o walPrefetchOptions
	return &cli.Command{
		Name:   "prefetch",
		Usage:  "fill the local WAL spool with the segments after NAME (started by wal fetch)",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "after", Required: true, Destination: &o.after, Usage: "segment `NAME` recovery asked for last"},
			&cli.Uint64Flag{Name: "segment-size", Value: wal.DefaultSegmentSize, Destination: &o.segSize, Usage: "WAL segment size in `BYTES`"},
			&cli.IntFlag{Name: "count", Value: stream.DefaultPrefetch, Destination: &o.count, Usage: "`N` segments to keep ahead"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if _, err := wal.ParseSegment(o.after, o.segSize); err != nil {
				return usageError{err}
			}
			return runWALPrefetch(c.Context, e, o)
		},
	}
}

func runWALPrefetch(ctx context.Context, e *env, o walPrefetchOptions) error {
	be, err := e.openBackend(ctx, false)
	if err != nil {
		return err
	}
	id, err := readRepoID(ctx, be)
	be.Close()
	if err != nil {
		return err
	}
	spool := e.walSpool(id)
	if spool == nil {
		return errors.New("wal prefetch: no usable spool folder")
	}
	release, err := spool.LockPrefetch()
	if errors.Is(err, stream.ErrPrefetchRunning) {
		return nil
	}
	if err != nil {
		return err
	}
	defer release()
	// Nobody reads this process's stderr: leave the outcome in the spool.
	logf := func(format string, args ...any) {
		line := fmt.Sprintf("%s pid %d: %s\n", time.Now().UTC().Format(time.RFC3339), os.Getpid(), fmt.Sprintf(format, args...))
		os.WriteFile(filepath.Join(spool.Dir(), "prefetch.log"), []byte(line), 0o600)
	}
	r, err := e.openRepo(ctx)
	if err != nil {
		logf("cannot open the repository: %v", err)
		return err
	}
	defer r.Close()
	res, err := stream.Prefetch(ctx, r, spool, stream.PrefetchOptions{
		After: o.after, SegmentSize: o.segSize, Count: o.count, Logger: e.log,
	})
	if err != nil {
		logf("stopped after %d segments: %v", res.Fetched, err)
		return err
	}
	logf("done: %d segments (%s) spooled, %d not available", res.Fetched, humanBytes(res.Bytes), res.Missing)
	return nil
}

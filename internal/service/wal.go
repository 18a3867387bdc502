package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgvault/pgvault/internal/atomicfile"
	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/stream"
)

// StreamOptions configure StreamWAL.
type StreamOptions struct {
	stream.StreamOptions
	Holder string
	// Opened, if set, is called once the repository is open and locked,
	// before the first connection: the agent learns there which cluster
	// the repository holds, so that its nodes refuse another one.
	Opened func(ctx context.Context, r *repo.Repository) error
}

// StreamWAL streams WAL from the first node that answers into the site's
// repository until ctx ends or a failure that reconnecting cannot fix
// (see stream.Run). It opens the repository as a concurrent writer under
// a concurrent lock: prune may run meanwhile.
func (s *Site) StreamWAL(ctx context.Context, nodes []stream.Node, o StreamOptions) error {
	r, err := s.Open(ctx, Access{ConcurrentWriter: true})
	if err != nil {
		return err
	}
	defer r.Close()
	holder := o.Holder
	if holder == "" {
		holder = "wal stream"
	}
	lock, err := r.Lock(ctx, repo.LockConcurrent, holder)
	if err != nil {
		return err
	}
	defer lock.Unlock(context.WithoutCancel(ctx))
	if o.Opened != nil {
		if err := o.Opened(ctx, r); err != nil {
			return err
		}
	}
	if o.Logger == nil {
		o.Logger = s.log()
	}
	return stream.Run(ctx, r, nodes, o.StreamOptions)
}

// StreamNode is a stream.Node for one connection string: a replication
// connection with the given application_name.
func StreamNode(conninfo, applicationName string) (stream.Node, error) {
	cfg, err := pg.ParseConfig(conninfo)
	if err != nil {
		return stream.Node{}, err
	}
	cfg = pg.Replication(cfg, applicationName)
	return stream.Node{Name: pg.Target(cfg), Connect: func(ctx context.Context) (*pgconn.PgConn, error) {
		return pg.Connect(ctx, cfg)
	}}, nil
}

// PushReport is what PushWAL stored.
type PushReport struct {
	*stream.PushResult
	Seconds float64 `json:"seconds"`
}

// PushWAL archives one WAL file (archive_command). The file is checked
// before the repository is opened: a bad file is refused without a key
// derivation, and even when the repository is down.
func (s *Site) PushWAL(ctx context.Context, path string) (*PushReport, error) {
	start := time.Now()
	name := filepath.Base(path)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("wal push: %w", err)
	}
	if _, err := wal.VerifyFile(name, data); err != nil {
		return nil, refusedPush(name, err)
	}
	// archive_command runs at any moment, also while prune runs: it takes a
	// concurrent lock, which excludes nothing, and opens the repository as
	// a concurrent writer, which reuses no blob prune could be deleting.
	r, err := s.Open(ctx, Access{ConcurrentWriter: true})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	lock, err := r.Lock(ctx, repo.LockConcurrent, "wal push")
	if err != nil {
		return nil, err
	}
	defer lock.Unlock(context.WithoutCancel(ctx))
	res, err := stream.Push(ctx, r, name, data, stream.PushOptions{})
	if err != nil {
		return nil, refusedPush(name, err)
	}
	return &PushReport{PushResult: res, Seconds: time.Since(start).Seconds()}, nil
}

// refusedPush words a refused push so the PostgreSQL log says what to do.
func refusedPush(name string, err error) error {
	switch {
	case errors.Is(err, repo.ErrWALConflict):
		return fmt.Errorf("refusing to archive %s: %w. This is serious: either two clusters archive into this repository, "+
			"or a copy of this cluster (a restored backup, a promoted standby) wrote WAL without starting a new timeline. "+
			"Stop and compare system identifiers (`pgvault list`, pg_controldata) before archiving goes on; nothing was overwritten", name, err)
	case errors.Is(err, wal.ErrInvalidSegment), errors.Is(err, wal.ErrInvalidHistory):
		return fmt.Errorf("refusing to archive %s: %w; nothing was stored: the file does not hold what its name says (damaged, recycled or copied under the wrong name)", name, err)
	}
	return err
}

// prefetchAwait bounds the wait for a segment the prefetcher is
// downloading; past it, FetchWAL downloads the segment itself.
const prefetchAwait = 10 * time.Second

// spoolMaxAge is how long a prefetched segment may wait in the spool.
const spoolMaxAge = 30 * time.Minute

// FetchOptions configure FetchWAL.
type FetchOptions struct {
	// Prefetch is how many segments a background prefetcher keeps ahead
	// in the local spool (0: none).
	Prefetch int
	// Executable is the pgvault binary the prefetcher runs ("": this
	// process's own).
	Executable string
	// LogLevel is passed to the prefetcher.
	LogLevel string
	// NoPartial answers "not archived" for a segment stored only as
	// .partial. A standby keeps what restore_command gives it in pg_wal,
	// over the rest of the segment it streamed from its primary: a
	// zero-padded partial there is WAL lost, which its cascading
	// replication then passes on and its promotion trips over.
	NoPartial bool
}

// FetchReport is what FetchWAL wrote.
type FetchReport struct {
	*stream.FetchResult
	Dest       string  `json:"dest"`
	Prefetcher bool    `json:"prefetcher_started"`
	Seconds    float64 `json:"seconds"`
}

// ErrWALNotArchived is matched when the repository does not hold the file
// restore_command asked for: the normal end of archive recovery.
var ErrWALNotArchived = errors.New("not in the repository")

// FetchWAL writes one archived WAL file to dest (restore_command): from
// the local spool when a prefetcher put it there, else from the
// repository, starting a prefetcher for the next segments.
func (s *Site) FetchWAL(ctx context.Context, name, dest string, o FetchOptions) (*FetchReport, error) {
	start := time.Now()
	kind := wal.Classify(name)
	done := func(res *stream.FetchResult, started bool) (*FetchReport, error) {
		return &FetchReport{FetchResult: res, Dest: dest, Prefetcher: started, Seconds: time.Since(start).Seconds()}, nil
	}
	// Before any key derivation: the spool (found through the plaintext
	// config) and whether the file is archived at all (object names).
	be, err := s.OpenBackend(ctx, false)
	if err != nil {
		return nil, err
	}
	id, err := repoID(ctx, be)
	if err != nil {
		be.Close()
		return nil, err
	}
	var spool *stream.Spool
	if kind == wal.KindSegment {
		spool = s.walSpool(id)
	}
	if spool != nil {
		// A segment the prefetcher is downloading right now comes sooner
		// from there than from a second download beside it.
		spool.Await(name, prefetchAwait)
		res, ok, err := spool.Take(name, dest)
		if err != nil {
			be.Close()
			return nil, err
		}
		if ok {
			be.Close()
			spool.Want(name, res.SegmentSize)
			spool.Clean(name, spoolMaxAge, time.Now())
			started := false
			if o.Prefetch > 0 && spool.Ahead(name) < (o.Prefetch+1)/2 && !spool.PrefetchRunning() {
				started = s.startPrefetcher(name, res.SegmentSize, o)
			}
			return done(res, started)
		}
	}
	archived, err := stream.Archived(ctx, be, name)
	be.Close()
	if err == nil && !archived {
		return nil, notArchived(name, kind)
	}
	r, err := s.Open(ctx, Access{Reads: "wal fetch"})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	started := false
	if spool != nil && o.Prefetch > 0 && !spool.PrefetchRunning() {
		started = s.startPrefetcherEarly(ctx, r, spool, name, o)
	}
	data, res, err := stream.Fetch(ctx, r, name)
	if errors.Is(err, repo.ErrWALNotFound) || (err == nil && res.FromPartial && o.NoPartial) {
		return nil, notArchived(name, kind)
	}
	if err != nil {
		return nil, fmt.Errorf("wal fetch %s: %w", name, err)
	}
	// No fsync: PostgreSQL makes restore_command's output durable itself
	// (durable_rename when it keeps the file).
	if err := atomicfile.WriteFile(dest, data, atomicfile.Options{NoSync: true}); err != nil {
		return nil, fmt.Errorf("wal fetch: %w", err)
	}
	if spool != nil {
		spool.Want(name, res.SegmentSize)
		spool.Clean(name, spoolMaxAge, time.Now())
		if o.Prefetch > 0 && !started && !res.FromPartial && !spool.PrefetchRunning() {
			started = s.startPrefetcher(name, res.SegmentSize, o)
		}
	}
	return done(res, started)
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
	return fmt.Errorf("WAL file %s is %w%s", name, ErrWALNotArchived, why)
}

// repoID reads the repository id from the plaintext config object.
func repoID(ctx context.Context, be backend.Backend) (string, error) {
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
// not writable: then a private folder in the temp dir named by uid is
// used, and the site's cache folder is pointed at it so the index cache
// lands there too. It returns nil (no spool, no prefetch) when no folder
// is usable or safe.
func (s *Site) walSpool(id string) *stream.Spool {
	candidates := []string{s.Cache()}
	if tmp := filepath.Join(os.TempDir(), fmt.Sprintf("pgvault-cache-%d", os.Geteuid())); tmp != candidates[0] {
		candidates = append(candidates, tmp)
	}
	var errs []error
	for _, dir := range candidates {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			errs = append(errs, err)
			continue
		}
		sp, err := stream.OpenSpool(dir, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if dir != candidates[0] {
			s.CacheDir = dir
		}
		return sp
	}
	s.log().Warn("no usable WAL spool: fetching without prefetch", "err", errors.Join(errs...))
	return nil
}

// startPrefetcherEarly starts the prefetcher before FetchWAL downloads
// segment name itself, so that the child's start (a process, the
// repository opened with the key this process just cached) overlaps the
// download instead of following it: recovery's next request then finds
// its segment spooled or under way. It needs the segment size before the
// download, from the segment's catalogue entry (one small read); a
// segment stored only as .partial starts no prefetcher here.
func (s *Site) startPrefetcherEarly(ctx context.Context, r *repo.Repository, spool *stream.Spool, name string, o FetchOptions) bool {
	wf, err := r.LoadWALFile(ctx, wal.NameTimeline(name), name)
	if err != nil || wf.Size <= 0 {
		return false // Fetch says what is wrong
	}
	if err := spool.Want(name, uint64(wf.Size)); err != nil {
		return false // not a whole segment
	}
	return s.startPrefetcher(name, uint64(wf.Size), o)
}

// startPrefetcher starts a detached `pgvault wal prefetch` (its own
// session, stdio on /dev/null, not waited for) that fills the spool with
// the segments after name. The child gets the repository, cache folder and
// password file through the environment, so nothing new shows in ps. It
// reports whether the process started.
func (s *Site) startPrefetcher(name string, segSize uint64, o FetchOptions) bool {
	exe := o.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			s.log().Warn("cannot start the WAL prefetcher", "err", err)
			return false
		}
	}
	env := os.Environ()
	if s.Repo != "" {
		env = append(env, "PGVAULT_REPO="+AbsIfPath(s.Repo))
	}
	env = append(env, "PGVAULT_CACHE_DIR="+AbsIfPath(s.Cache()), "PGVAULT_LOG_LEVEL="+o.LogLevel)
	if s.Password.File != "" {
		env = append(env, "PGVAULT_PASSWORD_FILE="+s.Password.File)
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		s.log().Warn("cannot start the WAL prefetcher", "err", err)
		return false
	}
	defer null.Close()
	cmd := exec.Command(exe, "wal", "prefetch", "--after", name,
		"--segment-size", strconv.FormatUint(segSize, 10), "--count", strconv.Itoa(o.Prefetch))
	cmd.Env = env
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		s.log().Warn("cannot start the WAL prefetcher", "err", err)
		return false
	}
	cmd.Process.Release()
	return true
}

// PrefetchOptions configure PrefetchWAL.
type PrefetchOptions struct {
	After       string
	SegmentSize uint64
	Count       int
}

// PrefetchWAL is the background half of FetchWAL: it fills the local
// spool with the segments after o.After, unless another prefetcher of the
// same spool runs. Nobody reads its stderr, so it leaves its outcome in
// the spool's prefetch.log.
func (s *Site) PrefetchWAL(ctx context.Context, o PrefetchOptions) error {
	be, err := s.OpenBackend(ctx, false)
	if err != nil {
		return err
	}
	id, err := repoID(ctx, be)
	be.Close()
	if err != nil {
		return err
	}
	spool := s.walSpool(id)
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
	logf := func(format string, args ...any) {
		line := fmt.Sprintf("%s pid %d: %s\n", time.Now().UTC().Format(time.RFC3339), os.Getpid(), fmt.Sprintf(format, args...))
		atomicfile.WriteFile(filepath.Join(spool.Dir(), "prefetch.log"), []byte(line), atomicfile.Options{NoSync: true})
	}
	r, err := s.Open(ctx, Access{Reads: "wal prefetch"})
	if err != nil {
		logf("cannot open the repository: %v", err)
		return err
	}
	defer r.Close()
	res, err := stream.Prefetch(ctx, r, spool, stream.PrefetchOptions{
		After: o.After, SegmentSize: o.SegmentSize, Count: o.Count, Logger: s.log(),
	})
	if err != nil {
		logf("stopped after %d segments: %v", res.Fetched, err)
		return err
	}
	logf("done: %d segments (%d bytes) spooled, %d not available", res.Fetched, res.Bytes, res.Missing)
	return nil
}

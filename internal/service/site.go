package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pgvault/pgvault/internal/redact"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/all"
	"github.com/pgvault/pgvault/repo/backend/retry"
)

// ErrBadRepoURL is matched by an error about the form of a repository URL
// (a usage mistake, not a storage failure).
var ErrBadRepoURL = all.ErrBadURL

// Site says where one cluster's backups live and how to open them: what
// the CLI's global flags and one site of the agent's configuration both
// describe. The zero value of each optional field is its default.
type Site struct {
	// Name is the agent's site name; "" on the command line.
	Name string
	// Repo is the repository URL or path.
	Repo string
	// Password is the repository password and where it came from.
	Password Password
	// CacheDir is the local cache folder (index tables, key cache, WAL
	// spool); "" means DefaultCacheDir(). restore_command names it only
	// when it is set.
	CacheDir string
	// CompressionLevel is the zstd level of new data; 0 means the codec's
	// default (chunk.DefaultLevel, chosen by measurement).
	CompressionLevel int
	// KeyCache keeps the key derived from the password in the cache folder
	// when the password came from a file (see keyCache).
	KeyCache bool
	// Logger receives the workflows' logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Retry configures the retry wrapper around the storage; its callbacks
	// feed the agent's upload alerts and metrics.
	Retry retry.Options
	// Wrap, when set, wraps the storage under the retry wrapper: the
	// agent's upload observer, the test build's fault injection.
	Wrap func(backend.Backend) backend.Backend
}

func (s *Site) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Site) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

// Cache returns the cache folder in use.
func (s *Site) Cache() string {
	if s.CacheDir != "" {
		return s.CacheDir
	}
	return DefaultCacheDir()
}

// DefaultCacheDir is the cache folder when none is given: systemd's
// CACHE_DIRECTORY (the agent's unit sets it), else the user's cache
// folder, else a private folder in the temp dir named by uid (a
// restore_command run as postgres may have no usable HOME).
func DefaultCacheDir() string {
	if d := os.Getenv("CACHE_DIRECTORY"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "pgvault")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("pgvault-cache-%d", os.Getuid()))
}

// ErrStorageConfig is matched when the storage a repository URL names
// cannot even be set up (a malformed URL, a missing bucket or host): no
// request was made, and only a human can fix it.
var ErrStorageConfig = errors.New("repository storage not usable as configured")

type storageConfigError struct{ err error }

func (e *storageConfigError) Error() string        { return e.err.Error() }
func (e *storageConfigError) Unwrap() error        { return e.err }
func (e *storageConfigError) Is(target error) bool { return target == ErrStorageConfig }

// OpenBackend opens the site's storage, through the retry wrapper (and
// Wrap under it). create prepares it for a new repository (an S3 bucket).
func (s *Site) OpenBackend(ctx context.Context, create bool) (backend.Backend, error) {
	if s.Repo == "" {
		return nil, &storageConfigError{fmt.Errorf("%w: no repository given", ErrBadRepoURL)}
	}
	be, err := all.Open(ctx, s.Repo, all.Options{Create: create, Retry: s.Retry, Wrap: s.Wrap})
	if err != nil && !create {
		// all.Open makes no request unless it creates a bucket.
		err = &storageConfigError{err}
	}
	return be, err
}

// Access says how a workflow uses the repository.
type Access struct {
	// ConcurrentWriter is for writers that run while prune may run (WAL
	// streaming and archiving); see repo.Options.ConcurrentWriter.
	ConcurrentWriter bool
	// SkipIndex opens without reading the index (repairs).
	SkipIndex bool
	// CacheSize is the in-memory chunk cache (mount, verify); 0 is repo's
	// default.
	CacheSize int64
	// Reads, when set, names a workflow that reads file or WAL contents
	// ("restore", "mount"): Open refuses a write-only key for it, before
	// anything is written.
	Reads string
}

// WriteOnlyError is Open's error for a workflow that reads contents,
// given the password of a write-only key. It matches repo.ErrWriteOnly.
type WriteOnlyError struct{ Workflow string }

func (e *WriteOnlyError) Error() string {
	return fmt.Sprintf("%s reads backed-up contents, and this password opens a write-only key (it stores backups and WAL but cannot read them back): use the password of a full key (`pgvault repo key list` shows which keys are write-only)", e.Workflow)
}

func (e *WriteOnlyError) Unwrap() error { return repo.ErrWriteOnly }

// Open opens the site's repository. A repository that turns out to be
// encrypted when the site has no password fails with Password.Missing (the
// caller's hint of where to give one) or repo.ErrNoPassword.
func (s *Site) Open(ctx context.Context, a Access) (*repo.Repository, error) {
	if m := s.Password.Missing; m != nil && !errors.Is(m, repo.ErrNoPassword) {
		return nil, m
	}
	be, err := s.OpenBackend(ctx, false)
	if err != nil {
		return nil, err
	}
	r, err := repo.Open(ctx, be, s.Password.Secret, repo.Options{
		CacheDir: s.Cache(), CacheSize: a.CacheSize, CompressionLevel: s.CompressionLevel,
		Logger: s.log(), Now: s.Now, SkipIndex: a.SkipIndex, ConcurrentWriter: a.ConcurrentWriter,
		KeyCache: s.keyCache(),
	})
	if err != nil {
		be.Close()
		if errors.Is(err, repo.ErrNoPassword) && s.Password.Missing != nil {
			return nil, s.Password.Missing
		}
		return nil, err
	}
	if a.Reads != "" && r.WriteOnly() {
		r.Close()
		return nil, &WriteOnlyError{Workflow: a.Reads}
	}
	return r, nil
}

// InitOptions configure Init.
type InitOptions struct {
	NoEncryption bool
	ChunkSize    int
	// KDF overrides the key derivation's cost (tests); zero is repo's.
	KDF repo.KDFParams
}

// InitReport is what Init created.
type InitReport struct {
	ID         string `json:"id"`
	Location   string `json:"location"`
	Encryption string `json:"encryption"`
	ChunkSize  int    `json:"chunk_size"`
}

// Init creates a repository at the site's URL.
func (s *Site) Init(ctx context.Context, o InitOptions) (*InitReport, error) {
	be, err := s.OpenBackend(ctx, true)
	if err != nil {
		return nil, err
	}
	defer be.Close()
	var pw []byte
	if !o.NoEncryption {
		if len(s.Password.Secret) == 0 {
			if s.Password.Missing != nil {
				return nil, s.Password.Missing
			}
			return nil, repo.ErrNoPassword
		}
		pw = s.Password.Secret
	}
	cfg, err := repo.Init(ctx, be, repo.InitOptions{Password: pw, NoEncryption: o.NoEncryption, ChunkSize: o.ChunkSize,
		KeyCache: s.keyCache(), KDF: o.KDF})
	if err != nil {
		return nil, err
	}
	return &InitReport{ID: cfg.ID, Location: be.Location(), Encryption: cfg.Encryption, ChunkSize: cfg.ChunkSize}, nil
}

// RedactedRepo is the repository URL fit to print.
func (s *Site) RedactedRepo() string { return redact.URL(s.Repo) }

// keyCache returns the cache of the key derived from the password when
// the password comes from a file (the way archive_command and
// restore_command run, over and over): the entries live in the private
// cache folder of the user who can read that file, and are tagged with
// the file's identity (path, inode, size, modification time), so editing
// or replacing the file makes them void. A password from the environment
// or a prompt is never cached.
func (s *Site) keyCache() repo.KeyCache {
	pw := s.Password
	if !s.KeyCache || pw.File == "" || pw.From != pw.File {
		return nil
	}
	fi, err := os.Stat(pw.File)
	if err != nil {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	tag := fmt.Sprintf("%s dev=%d ino=%d size=%d mtime=%d", pw.File, st.Dev, st.Ino, fi.Size(), fi.ModTime().UnixNano())
	return repo.DirKeyCache{Dir: s.Cache(), Tag: tag}
}

// Stats sums up the repository's size, dedup and compression.
func (s *Site) Stats(ctx context.Context) (*repo.Stats, error) {
	r, err := s.Open(ctx, Access{})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Stats(ctx)
}

// Unlock removes the locks of processes that are gone.
func (s *Site) Unlock(ctx context.Context) ([]repo.LockInfo, error) {
	r, err := s.Open(ctx, Access{})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	removed, err := r.RemoveStaleLocks(ctx)
	if removed == nil {
		removed = []repo.LockInfo{}
	}
	return removed, err
}

// RebuildIndex rebuilds the index from the packs' own headers, under an
// exclusive lock, without reading the (possibly damaged) index first.
func (s *Site) RebuildIndex(ctx context.Context) (*repo.RebuildResult, error) {
	r, err := s.Open(ctx, Access{SkipIndex: true})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	lock, err := r.Lock(ctx, repo.LockExclusive, "rebuild-index")
	if err != nil {
		return nil, err
	}
	defer lock.Unlock(context.WithoutCancel(ctx))
	return r.RebuildIndex(ctx)
}

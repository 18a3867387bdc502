package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/all"
	"github.com/pgvault/pgvault/repo/backend/retry"
)

// observedBackend tells the site when an upload succeeds, which ends the
// upload_retries_warning alert.
type observedBackend struct {
	backend.Backend
	onSaved func()
}

var _ backend.Backend = (*observedBackend)(nil)

func (b *observedBackend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	err := b.Backend.Save(ctx, h, data)
	if err == nil {
		b.onSaved()
	}
	return err
}

// cacheDir is the site's cache folder: its cache_dir, else the
// agent-wide one, else systemd's CACHE_DIRECTORY, else the user's.
func (s *site) cacheDir() string {
	if d := s.config().CacheDir; d != "" {
		return d
	}
	if d := os.Getenv("CACHE_DIRECTORY"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "pgvault")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("pgvault-cache-%d", os.Getuid()))
}

// openRepo opens the site's repository through the retry wrapper, whose
// callbacks feed the upload_retries_warning alert and the upload
// metrics. concurrent opens it for a writer that runs during prune (the
// WAL streamer). A repository that does not open for a reason only a
// human can fix (not a repository, wrong password) starts the
// configuration_error alert; opening it ends that alert.
func (s *site) openRepo(ctx context.Context, concurrent bool) (*repo.Repository, error) {
	cfg := s.config()
	be, err := all.Open(ctx, cfg.Repo, all.Options{Retry: s.retryOptions()})
	if err != nil {
		s.a.alerts.Raise(s.name, AlertConfiguration, "repository", fmt.Sprintf("sites.%s.repo: %v", s.name, err))
		return nil, err
	}
	be = s.observe(be)
	r, err := repo.Open(ctx, be, []byte(cfg.Secrets.RepoPassword), repo.Options{
		CacheDir: s.cacheDir(), CompressionLevel: cfg.CompressionLevel, Logger: s.log, Now: s.a.clock.Now,
		ConcurrentWriter: concurrent,
	})
	if err != nil {
		be.Close()
		switch {
		case errors.Is(err, repo.ErrNoPassword):
			err = fmt.Errorf("the repository at %s is encrypted and sites.%s has no password: set sites.%s.password_file or %s", be.Location(), s.name, s.name, RepoPasswordEnv(s.name))
			s.a.alerts.Raise(s.name, AlertConfiguration, "repository", err.Error())
		case errors.Is(err, repo.ErrWrongPassword):
			from := cfg.Secrets.RepoPasswordFrom
			err = fmt.Errorf("the repository at %s does not open with the password from %s: %w", be.Location(), from, err)
			s.a.alerts.Raise(s.name, AlertConfiguration, "repository", err.Error())
		case errors.Is(err, repo.ErrNotRepository):
			s.a.alerts.Raise(s.name, AlertConfiguration, "repository", err.Error())
		}
		return nil, err
	}
	s.a.alerts.Clear(s.name, AlertConfiguration, "repository")
	return r, nil
}

// retryOptions feed the retry wrapper's callbacks into the upload
// metrics and the upload_retries_warning alert (pghoard's
// upload_retries_warning_limit): it starts when one call to the storage
// has failed that many times, or failed for good. Reads count too: the
// streamer reads the WAL catalogue before it stores a segment, so an
// unreachable store shows first as failing reads.
func (s *site) retryOptions() retry.Options {
	limit := s.config().UploadRetriesWarningLimit
	return retry.Options{
		OnRetry: func(op string, h backend.Handle, attempt int, err error) {
			if op == "save" {
				s.a.metrics.uploadRetries.WithLabelValues(s.name).Inc()
				s.update(func(st *SiteState) { st.Uploads.Retries++; st.Uploads.Last = err.Error() })
			}
			if attempt >= limit {
				s.a.alerts.Raise(s.name, AlertUploadRetries, "backend",
					fmt.Sprintf("%s of %s failed %d times (upload_retries_warning_limit %d), still retrying: %v", op, h, attempt, limit, err))
			}
		},
		OnGiveUp: func(op string, h backend.Handle, err error) {
			if op == "save" {
				s.a.metrics.uploadErrors.WithLabelValues(s.name).Inc()
				s.update(func(st *SiteState) { st.Uploads.Errors++; st.Uploads.Last = err.Error() })
			}
			s.a.alerts.Raise(s.name, AlertUploadRetries, "backend", fmt.Sprintf("%s of %s failed: %v", op, h, err))
		},
	}
}

// observe wraps a backend so that a successful upload ends the
// upload_retries_warning alert.
func (s *site) observe(be backend.Backend) backend.Backend {
	return &observedBackend{Backend: be, onSaved: func() { s.a.alerts.Clear(s.name, AlertUploadRetries, "backend") }}
}

// withReader runs f on the site's long-lived read handle (reopened after
// a prune, whose deletions an index read before it would not know).
func (s *site) withReader(ctx context.Context, f func(r *repo.Repository) error) error {
	s.readerMu.Lock()
	defer s.readerMu.Unlock()
	if s.reader != nil && s.readerStale.Load() {
		s.reader.Close()
		s.reader = nil
	}
	if s.reader == nil {
		r, err := s.openRepo(ctx, false)
		if err != nil {
			return err
		}
		s.reader = r
		s.readerStale.Store(false)
	} else if err := s.reader.ReloadIndex(ctx); err != nil {
		s.reader.Close()
		s.reader = nil
		return err
	}
	err := f(s.reader)
	if err != nil && ctx.Err() == nil {
		s.readerStale.Store(true) // start afresh next time
	}
	return err
}

func (s *site) closeReader() {
	s.readerMu.Lock()
	defer s.readerMu.Unlock()
	if s.reader != nil {
		s.reader.Close()
		s.reader = nil
	}
}

package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgvault/pgvault/internal/redact"
	"github.com/pgvault/pgvault/internal/service"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend"
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

// service is the site as the service layer opens it: through the retry
// wrapper, whose callbacks feed the upload_retries_warning alert and the
// upload metrics, with a successful upload ending that alert, and with
// the test build's storage hook (Options.StorageHook) under it.
func (s *site) service() *service.Site {
	svc := s.config().Service()
	svc.Logger, svc.Now, svc.Retry = s.log, s.a.clock.Now, s.retryOptions()
	svc.Wrap = func(be backend.Backend) backend.Backend {
		return &observedBackend{Backend: be, onSaved: func() { s.a.alerts.Clear(s.name, AlertUploadRetries, "backend") }}
	}
	if hook := s.a.opts.StorageHook; hook != nil {
		hook(svc)
	}
	return svc
}

// cacheDir is the site's cache folder.
func (s *site) cacheDir() string { return s.service().Cache() }

// openRepo opens the site's repository. concurrent opens it for a writer
// that runs during prune (the WAL streamer). A repository that does not
// open for a reason only a human can fix (not a repository, wrong
// password) starts the configuration_error alert; opening it ends that
// alert.
func (s *site) openRepo(ctx context.Context, concurrent bool) (*repo.Repository, error) {
	r, err := s.service().Open(ctx, service.Access{ConcurrentWriter: concurrent})
	if err != nil {
		return nil, s.repoFailed(err)
	}
	s.a.alerts.Clear(s.name, AlertConfiguration, "repository")
	s.noteKey(r.WriteOnly())
	return r, nil
}

// noteKey records whether the site's key is write-only; the worker then
// skips the jobs that read backed-up contents.
func (s *site) noteKey(writeOnly bool) {
	s.mu.Lock()
	changed := s.st.WriteOnly != writeOnly
	s.mu.Unlock()
	if !changed {
		return
	}
	if writeOnly {
		s.log.Info("the repository password opens a write-only key: backups and WAL are stored; retention, restore drills and synthetic backups are left to a host with a full key")
	}
	s.update(func(st *SiteState) { st.WriteOnly = writeOnly })
}

// repoFailed raises configuration_error for what only a human can fix (a
// bad URL, no password, a wrong one, no repository there) and returns err
// in the agent's terms.
func (s *site) repoFailed(err error) error {
	cfg := s.config()
	switch {
	case errors.Is(err, service.ErrStorageConfig):
		s.a.alerts.Raise(s.name, AlertConfiguration, "repository", fmt.Sprintf("sites.%s.repo: %v", s.name, err))
	case errors.Is(err, repo.ErrWrongPassword):
		err = fmt.Errorf("the repository at %s does not open with the password from %s: %w", redact.URL(cfg.Repo), cfg.Secrets.RepoPasswordFrom, err)
		s.a.alerts.Raise(s.name, AlertConfiguration, "repository", err.Error())
	case errors.Is(err, repo.ErrNoPassword), errors.Is(err, repo.ErrNotRepository):
		s.a.alerts.Raise(s.name, AlertConfiguration, "repository", err.Error())
	}
	return err
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

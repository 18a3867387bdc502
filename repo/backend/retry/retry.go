package retry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pgvault/pgvault/repo/backend"
)

// Defaults used for the zero fields of Options.
const (
	DefaultMaxAttempts  = 8
	DefaultInitialDelay = 200 * time.Millisecond
	DefaultMaxDelay     = 15 * time.Second
	DefaultMaxElapsed   = 2 * time.Minute
)

// Options tune the backoff. The zero value gives the defaults above.
type Options struct {
	// MaxAttempts is the number of calls made before giving up, the first
	// included. 1 disables retrying.
	MaxAttempts int
	// InitialDelay is the wait before the second attempt; each further wait
	// doubles, up to MaxDelay. Each wait is jittered to between half and all
	// of its nominal value.
	InitialDelay time.Duration
	MaxDelay     time.Duration
	// MaxElapsed bounds the time from the first attempt: no retry is started
	// whose wait would end after it. Negative means no bound.
	MaxElapsed time.Duration

	// OnRetry is called before each wait, with the attempt that just failed
	// (1 for the first call) and its error.
	OnRetry func(op string, h backend.Handle, attempt int, err error)
	// OnGiveUp is called when the retries are used up, with the error
	// returned to the caller.
	OnGiveUp func(op string, h backend.Handle, err error)

	// Sleep waits for d or until ctx is done (tests inject a fake). It
	// returns ctx.Err() when ctx ended the wait.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock used for MaxElapsed (tests inject a fake).
	Now func() time.Time
	// Seed seeds the jitter; 0 picks a random seed.
	Seed uint64
}

func (o Options) withDefaults() Options {
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.InitialDelay <= 0 {
		o.InitialDelay = DefaultInitialDelay
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = DefaultMaxDelay
	}
	if o.MaxDelay < o.InitialDelay {
		o.MaxDelay = o.InitialDelay
	}
	if o.MaxElapsed == 0 {
		o.MaxElapsed = DefaultMaxElapsed
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Seed == 0 {
		o.Seed = rand.Uint64()
	}
	return o
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Backend retries the calls of the backend it wraps.
type Backend struct {
	b    backend.Backend
	opts Options

	mu  sync.Mutex // guards rnd
	rnd *rand.Rand
}

var _ backend.Backend = (*Backend)(nil)

// New wraps b. Zero fields of opts take the package defaults.
func New(b backend.Backend, opts Options) *Backend {
	opts = opts.withDefaults()
	return &Backend{b: b, opts: opts, rnd: rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15))}
}

// Unwrap returns the wrapped backend (for backend-specific calls such as
// creating an S3 bucket).
func (r *Backend) Unwrap() backend.Backend { return r.b }

// Location is the wrapped backend's.
func (r *Backend) Location() string { return r.b.Location() }

// Close closes the wrapped backend.
func (r *Backend) Close() error { return r.b.Close() }

// delay is the jittered wait after the given failed attempt (1-based).
func (r *Backend) delay(attempt int) time.Duration {
	d := r.opts.InitialDelay
	for i := 1; i < attempt && d < r.opts.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, r.opts.MaxDelay)
	r.mu.Lock()
	j := r.rnd.Int64N(int64(d/2) + 1)
	r.mu.Unlock()
	return d/2 + time.Duration(j)
}

// do calls fn until it succeeds, fails permanently, the context ends or the
// retries are used up.
func (r *Backend) do(ctx context.Context, op string, h backend.Handle, fn func() error) error {
	start := r.opts.Now()
	var short error // the last ErrShortRead seen, reported if a later attempt fails otherwise
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s %v: %w", op, h, err)
		}
		err := fn()
		if err == nil {
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			if errors.Is(err, cerr) {
				return err
			}
			return fmt.Errorf("%s %v: %w (last error: %v)", op, h, cerr, err)
		}
		if backend.IsPermanent(err) || isCallbackError(err) {
			return err
		}
		if errors.Is(err, backend.ErrShortRead) {
			short = err
		} else if short != nil {
			// The object was seen shorter than the range: say so even if
			// the last attempt failed for another reason.
			err = fmt.Errorf("%w (an earlier attempt: %w)", err, short)
		}
		if attempt >= r.opts.MaxAttempts {
			return r.giveUp(op, h, fmt.Errorf("giving up after %d attempts in %v: %w",
				attempt, r.opts.Now().Sub(start).Round(time.Millisecond), err))
		}
		d := r.delay(attempt)
		if r.opts.MaxElapsed > 0 && r.opts.Now().Add(d).Sub(start) > r.opts.MaxElapsed {
			return r.giveUp(op, h, fmt.Errorf("giving up after %d attempts in %v (limit %v): %w",
				attempt, r.opts.Now().Sub(start).Round(time.Millisecond), r.opts.MaxElapsed, err))
		}
		if r.opts.OnRetry != nil {
			r.opts.OnRetry(op, h, attempt, err)
		}
		if serr := r.opts.Sleep(ctx, d); serr != nil {
			return fmt.Errorf("%s %v: %w (last error: %v)", op, h, serr, err)
		}
	}
}

func (r *Backend) giveUp(op string, h backend.Handle, err error) error {
	if r.opts.OnGiveUp != nil {
		r.opts.OnGiveUp(op, h, err)
	}
	return err
}

func (r *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	return r.do(ctx, "save", h, func() error { return r.b.Save(ctx, h, data) })
}

func (r *Backend) Load(ctx context.Context, h backend.Handle, offset, length int64) ([]byte, error) {
	var out []byte
	err := r.do(ctx, "load", h, func() error {
		var err error
		out, err = r.b.Load(ctx, h, offset, length)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (r *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	var fi backend.FileInfo
	err := r.do(ctx, "stat", h, func() error {
		var err error
		fi, err = r.b.Stat(ctx, h)
		return err
	})
	return fi, err
}

func (r *Backend) Remove(ctx context.Context, h backend.Handle) error {
	return r.do(ctx, "remove", h, func() error { return r.b.Remove(ctx, h) })
}

// callbackError marks an error returned by List's callback, which must be
// handed back unchanged and never retried.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }
func (e *callbackError) Unwrap() error { return e.err }

func isCallbackError(err error) bool {
	var ce *callbackError
	return errors.As(err, &ce)
}

func (r *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	seen := map[string]bool{}
	err := r.do(ctx, "list", backend.Handle{Type: t, Name: "*"}, func() error {
		return r.b.List(ctx, t, func(fi backend.FileInfo) error {
			if seen[fi.Name] {
				return nil
			}
			seen[fi.Name] = true
			if err := fn(fi); err != nil {
				return &callbackError{err: err}
			}
			return nil
		})
	})
	var ce *callbackError
	if errors.As(err, &ce) {
		return ce.err
	}
	return err
}

package retry_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/backendtest"
	"github.com/pgvault/pgvault/repo/backend/faulty"
	"github.com/pgvault/pgvault/repo/backend/mem"
	"github.com/pgvault/pgvault/repo/backend/retry"
)

var errTransient = errors.New("connection reset by peer")

// fake fails its first n calls of every operation with err, then delegates
// to an in-memory backend; it counts calls per operation.
type fake struct {
	*mem.Backend
	mu    sync.Mutex
	fails int
	err   error
	calls map[string]int
	// cancel, when set, is called during the first call (a caller giving up
	// while the call is in flight).
	cancel context.CancelFunc
}

func newFake(fails int, err error) *fake {
	return &fake{Backend: mem.New(), fails: fails, err: err, calls: map[string]int{}}
}

func (f *fake) call(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	if f.cancel != nil {
		f.cancel()
	}
	if f.calls[op] <= f.fails {
		return fmt.Errorf("%s: %w", op, f.err)
	}
	return nil
}

func (f *fake) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *fake) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := f.call("save"); err != nil {
		return err
	}
	return f.Backend.Save(ctx, h, data)
}

func (f *fake) Load(ctx context.Context, h backend.Handle, off, n int64) ([]byte, error) {
	if err := f.call("load"); err != nil {
		return nil, err
	}
	return f.Backend.Load(ctx, h, off, n)
}

func (f *fake) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := f.call("stat"); err != nil {
		return backend.FileInfo{}, err
	}
	return f.Backend.Stat(ctx, h)
}

func (f *fake) Remove(ctx context.Context, h backend.Handle) error {
	if err := f.call("remove"); err != nil {
		return err
	}
	return f.Backend.Remove(ctx, h)
}

func (f *fake) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := f.call("list"); err != nil {
		return err
	}
	return f.Backend.List(ctx, t, fn)
}

// recorder is a fake clock and sleeper plus the callbacks' log.
type recorder struct {
	mu      sync.Mutex
	now     time.Time
	sleeps  []time.Duration
	retries []string
	giveUps []string
}

func (r *recorder) options(attempts int) retry.Options {
	r.now = time.Unix(1_700_000_000, 0)
	return retry.Options{
		MaxAttempts:  attempts,
		InitialDelay: 100 * time.Millisecond,
		MaxDelay:     time.Second,
		MaxElapsed:   time.Hour,
		Seed:         1,
		Sleep: func(ctx context.Context, d time.Duration) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.sleeps = append(r.sleeps, d)
			r.now = r.now.Add(d)
			return ctx.Err()
		},
		Now: func() time.Time {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.now
		},
		OnRetry: func(op string, h backend.Handle, attempt int, err error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.retries = append(r.retries, fmt.Sprintf("%s %v #%d", op, h, attempt))
		},
		OnGiveUp: func(op string, h backend.Handle, err error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.giveUps = append(r.giveUps, fmt.Sprintf("%s %v: %v", op, h, err))
		},
	}
}

var h = backend.Handle{Type: backend.IndexFile, Name: "0123"}

func ops() map[string]func(context.Context, backend.Backend) error {
	return map[string]func(context.Context, backend.Backend) error{
		"save": func(ctx context.Context, b backend.Backend) error { return b.Save(ctx, h, []byte("data")) },
		"load": func(ctx context.Context, b backend.Backend) error { _, err := b.Load(ctx, h, 0, 0); return err },
		"stat": func(ctx context.Context, b backend.Backend) error { _, err := b.Stat(ctx, h); return err },
		"remove": func(ctx context.Context, b backend.Backend) error {
			return b.Remove(ctx, h)
		},
		"list": func(ctx context.Context, b backend.Backend) error {
			return b.List(ctx, backend.IndexFile, func(backend.FileInfo) error { return nil })
		},
	}
}

func TestRetry(t *testing.T) {
	accessDenied := backend.Permanent(errors.New("access denied"))
	tests := []struct {
		name        string
		fails       int
		err         error
		attempts    int
		cancel      string // "before" or "during"
		wantCalls   int
		wantErr     error // matched with errors.Is; nil means success
		wantRetries int
		wantGiveUp  bool
	}{
		{name: "success needs no retry", fails: 0, err: errTransient, attempts: 5, wantCalls: 1},
		{name: "transient error is retried until it succeeds", fails: 3, err: errTransient, attempts: 5, wantCalls: 4, wantRetries: 3},
		{name: "short read is retried", fails: 2, err: backend.ErrShortRead, attempts: 5, wantCalls: 3, wantRetries: 2},
		{name: "permanent error is not retried", fails: 10, err: accessDenied, attempts: 5, wantCalls: 1, wantErr: accessDenied},
		{name: "not found is not retried", fails: 10, err: backend.ErrNotFound, attempts: 5, wantCalls: 1, wantErr: backend.ErrNotFound},
		{name: "gives up after N and calls OnGiveUp", fails: 10, err: errTransient, attempts: 4, wantCalls: 4, wantErr: errTransient, wantRetries: 3, wantGiveUp: true},
		{name: "one attempt means no retry", fails: 10, err: errTransient, attempts: 1, wantCalls: 1, wantErr: errTransient, wantGiveUp: true},
		{name: "cancelled context stops at once", fails: 10, err: errTransient, attempts: 5, cancel: "before", wantCalls: 0, wantErr: context.Canceled},
		{name: "context cancelled during a call is not retried", fails: 10, err: errTransient, attempts: 5, cancel: "during", wantCalls: 1, wantErr: context.Canceled},
	}
	for _, tc := range tests {
		for op, call := range ops() {
			t.Run(tc.name+"/"+op, func(t *testing.T) {
				f := newFake(tc.fails, tc.err)
				if err := f.Backend.Save(context.Background(), h, []byte("data")); err != nil {
					t.Fatal(err)
				}
				var rec recorder
				b := retry.New(f, rec.options(tc.attempts))
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				switch tc.cancel {
				case "before":
					cancel()
				case "during":
					f.cancel = cancel
				}
				err := call(ctx, b)
				switch {
				case tc.wantErr == nil && err != nil:
					t.Fatalf("%s: %v, want success", op, err)
				case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
					t.Fatalf("%s: %v, want an error matching %v", op, err, tc.wantErr)
				}
				if got := f.count(op); got != tc.wantCalls {
					t.Errorf("%s called %d times, want %d", op, got, tc.wantCalls)
				}
				if len(rec.retries) != tc.wantRetries || len(rec.sleeps) != tc.wantRetries {
					t.Errorf("OnRetry called %d times, slept %d times, want %d: %q", len(rec.retries), len(rec.sleeps), tc.wantRetries, rec.retries)
				}
				if got := len(rec.giveUps) == 1; got != tc.wantGiveUp || len(rec.giveUps) > 1 {
					t.Errorf("OnGiveUp calls: %q, want called: %v", rec.giveUps, tc.wantGiveUp)
				}
				if tc.wantGiveUp && !strings.Contains(err.Error(), fmt.Sprintf("giving up after %d attempts", tc.attempts)) {
					t.Errorf("error %q does not say it gave up after %d attempts", err, tc.attempts)
				}
			})
		}
	}
}

func TestBackoffGrowsWithJitterAndCap(t *testing.T) {
	f := newFake(100, errTransient)
	var rec recorder
	opts := rec.options(10)
	b := retry.New(f, opts)
	_ = b.Save(context.Background(), h, nil)
	if len(rec.sleeps) != 9 {
		t.Fatalf("slept %d times, want 9", len(rec.sleeps))
	}
	nominal := opts.InitialDelay
	for i, d := range rec.sleeps {
		if d < nominal/2 || d > nominal {
			t.Errorf("wait %d = %v, want in [%v, %v]", i+1, d, nominal/2, nominal)
		}
		nominal = min(2*nominal, opts.MaxDelay)
	}
}

func TestMaxElapsedStopsRetrying(t *testing.T) {
	f := newFake(100, errTransient)
	var rec recorder
	opts := rec.options(100)
	opts.MaxElapsed = 3 * time.Second
	b := retry.New(f, opts)
	err := b.Save(context.Background(), h, nil)
	if !errors.Is(err, errTransient) || !strings.Contains(err.Error(), "limit 3s") {
		t.Fatalf("Save: %v, want a give-up error naming the 3s limit", err)
	}
	var total time.Duration
	for _, d := range rec.sleeps {
		total += d
	}
	if total > 3*time.Second {
		t.Errorf("slept %v in all, beyond MaxElapsed", total)
	}
	if len(rec.giveUps) != 1 {
		t.Errorf("OnGiveUp called %d times, want 1", len(rec.giveUps))
	}
}

func TestRealSleepHonoursCancel(t *testing.T) {
	f := newFake(100, errTransient)
	b := retry.New(f, retry.Options{InitialDelay: time.Hour, MaxDelay: time.Hour, MaxElapsed: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := b.Save(ctx, h, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Save: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Save took %v after the deadline", d)
	}
}

// flakyList fails a listing part-way the first time.
type flakyList struct {
	*mem.Backend
	failed bool
}

func (f *flakyList) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	n := 0
	return f.Backend.List(ctx, t, func(fi backend.FileInfo) error {
		if n == 2 && !f.failed {
			f.failed = true
			return errTransient
		}
		n++
		return fn(fi)
	})
}

func TestListRetryDoesNotRepeatNames(t *testing.T) {
	m := mem.New()
	for i := range 5 {
		if err := m.Save(context.Background(), backend.Handle{Type: backend.KeyFile, Name: fmt.Sprint("k", i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	var rec recorder
	b := retry.New(&flakyList{Backend: m}, rec.options(3))
	seen := map[string]int{}
	err := b.List(context.Background(), backend.KeyFile, func(fi backend.FileInfo) error {
		seen[fi.Name]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 5 {
		t.Errorf("listed %d names, want 5", len(seen))
	}
	for n, c := range seen {
		if c != 1 {
			t.Errorf("%q listed %d times", n, c)
		}
	}
	if len(rec.retries) != 1 {
		t.Errorf("%d retries, want 1", len(rec.retries))
	}
}

func TestListCallbackErrorIsNotRetried(t *testing.T) {
	f := newFake(0, nil)
	_ = f.Backend.Save(context.Background(), h, nil)
	var rec recorder
	b := retry.New(f, rec.options(5))
	mine := errors.New("transient-looking callback error")
	err := b.List(context.Background(), backend.IndexFile, func(backend.FileInfo) error { return mine })
	if err != mine {
		t.Fatalf("List: %v, want the callback's error unchanged", err)
	}
	if f.count("list") != 1 {
		t.Fatalf("List called %d times, want 1", f.count("list"))
	}
}

// TestConformanceOverFaults runs the conformance suite on a backend that
// fails often (transient errors, short reads, partial writes) behind the
// retry wrapper: retrying must hide every one of those faults. Partial
// writes are visible to concurrent readers until the retry replaces them
// (that is what they simulate), so the suite is told to expect that.
func TestConformanceOverFaults(t *testing.T) {
	var seed int64
	var mu sync.Mutex
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		mu.Lock()
		seed++
		s := seed
		mu.Unlock()
		fb := faulty.New(mem.New(), faulty.Options{
			Seed:         s,
			Error:        0.1,
			ShortRead:    0.1,
			PartialWrite: 0.1,
		})
		t.Cleanup(func() {
			c := fb.Counts()
			t.Logf("injected: %+v", c)
		})
		return retry.New(fb, retry.Options{
			MaxAttempts:  20,
			InitialDelay: 100 * time.Microsecond,
			MaxDelay:     time.Millisecond,
		})
	}, backendtest.PartialWritesVisible())
}

package faulty

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgvault/pgvault/repo/backend"
)

// ErrInjected is matched (errors.Is) by every error this package injects.
var ErrInjected = errors.New("injected fault")

// Options says which faults to inject, each as a probability per call
// (0 = never, 1 = always).
type Options struct {
	// Seed seeds the fault generator.
	Seed int64
	// Types limits faults to objects of these types; empty means all types.
	Types []backend.FileType

	// Error: any call (Save, Load, Stat, Remove, List) fails with a
	// transient error before reaching the wrapped backend. A List may
	// instead fail part-way, after some names were passed to the callback.
	Error float64
	// Latency: any call is delayed by LatencyDuration first (the delay
	// honours the context).
	Latency         float64
	LatencyDuration time.Duration
	// ShortRead: Load fails with an error matching backend.ErrShortRead.
	ShortRead float64
	// PartialWrite: Save stores a truncated prefix of the data, then fails.
	PartialWrite float64
	// BitFlip: Load flips one random bit of the returned data and succeeds.
	BitFlip float64
}

// Counts are the faults injected so far.
type Counts struct {
	Errors, Latencies, ShortReads, PartialWrites, BitFlips int64
}

// Backend injects faults into the calls of the backend it wraps.
type Backend struct {
	b backend.Backend

	mu      sync.Mutex // guards rnd and opts
	rnd     *rand.Rand
	opts    Options
	enabled bool

	errors, latencies, shortReads, partialWrites, bitFlips atomic.Int64
}

var _ backend.Backend = (*Backend)(nil)

// New wraps b.
func New(b backend.Backend, opts Options) *Backend {
	s := uint64(opts.Seed)
	return &Backend{
		b:       b,
		rnd:     rand.New(rand.NewPCG(s, s^0x5851f42d4c957f2d)),
		opts:    opts,
		enabled: true,
	}
}

// SetOptions replaces the fault settings (the generator keeps its state).
func (f *Backend) SetOptions(opts Options) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opts = opts
}

// SetEnabled turns fault injection on or off, e.g. to verify a repository
// after a faulty run.
func (f *Backend) SetEnabled(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.enabled = on
}

// Counts returns the number of faults injected so far.
func (f *Backend) Counts() Counts {
	return Counts{
		Errors:        f.errors.Load(),
		Latencies:     f.latencies.Load(),
		ShortReads:    f.shortReads.Load(),
		PartialWrites: f.partialWrites.Load(),
		BitFlips:      f.bitFlips.Load(),
	}
}

// Unwrap returns the wrapped backend.
func (f *Backend) Unwrap() backend.Backend { return f.b }

func (f *Backend) Location() string { return "faulty:" + f.b.Location() }
func (f *Backend) Close() error     { return f.b.Close() }

// roll reports whether a fault of probability p (picked from the options)
// happens for an object of type t, and draws a number in [0, n) for the
// fault's details when n > 0.
func (f *Backend) roll(t backend.FileType, p func(Options) float64, n int) (bool, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.enabled {
		return false, 0
	}
	if len(f.opts.Types) > 0 && !slices.Contains(f.opts.Types, t) {
		return false, 0
	}
	prob := p(f.opts)
	if prob <= 0 || f.rnd.Float64() >= prob {
		return false, 0
	}
	if n <= 0 {
		return true, 0
	}
	return true, f.rnd.IntN(n)
}

func (f *Backend) latencyDuration() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opts.LatencyDuration
}

// before injects latency and transient errors common to every call.
func (f *Backend) before(ctx context.Context, op string, h backend.Handle) error {
	if ok, _ := f.roll(h.Type, func(o Options) float64 { return o.Latency }, 0); ok {
		f.latencies.Add(1)
		t := time.NewTimer(f.latencyDuration())
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	if ok, _ := f.roll(h.Type, func(o Options) float64 { return o.Error }, 0); ok {
		f.errors.Add(1)
		return fmt.Errorf("%s %v: %w: connection reset", op, h, ErrInjected)
	}
	return nil
}

func (f *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := f.before(ctx, "save", h); err != nil {
		return err
	}
	if ok, n := f.roll(h.Type, func(o Options) float64 { return o.PartialWrite }, len(data)+1); ok {
		f.partialWrites.Add(1)
		if err := f.b.Save(ctx, h, data[:min(n, max(len(data)-1, 0))]); err != nil {
			return fmt.Errorf("save %v: %w: partial write failed too: %w", h, ErrInjected, err)
		}
		return fmt.Errorf("save %v: %w: connection lost after a partial write", h, ErrInjected)
	}
	return f.b.Save(ctx, h, data)
}

func (f *Backend) Load(ctx context.Context, h backend.Handle, offset, length int64) ([]byte, error) {
	if err := f.before(ctx, "load", h); err != nil {
		return nil, err
	}
	if ok, _ := f.roll(h.Type, func(o Options) float64 { return o.ShortRead }, 0); ok {
		f.shortReads.Add(1)
		return nil, fmt.Errorf("load %v at %d+%d: %w: %w", h, offset, length, ErrInjected, backend.ErrShortRead)
	}
	buf, err := f.b.Load(ctx, h, offset, length)
	if err != nil || len(buf) == 0 {
		return buf, err
	}
	if ok, bit := f.roll(h.Type, func(o Options) float64 { return o.BitFlip }, len(buf)*8); ok {
		f.bitFlips.Add(1)
		buf[bit/8] ^= 1 << (bit % 8)
	}
	return buf, nil
}

func (f *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := f.before(ctx, "stat", h); err != nil {
		return backend.FileInfo{}, err
	}
	return f.b.Stat(ctx, h)
}

func (f *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := f.before(ctx, "remove", h); err != nil {
		return err
	}
	return f.b.Remove(ctx, h)
}

func (f *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	h := backend.Handle{Type: t, Name: "*"}
	if ok, _ := f.roll(t, func(o Options) float64 { return o.Latency }, 0); ok {
		f.latencies.Add(1)
		tm := time.NewTimer(f.latencyDuration())
		select {
		case <-ctx.Done():
			tm.Stop()
			return ctx.Err()
		case <-tm.C:
		}
	}
	fail, after := f.roll(t, func(o Options) float64 { return o.Error }, 4)
	if !fail {
		return f.b.List(ctx, t, fn)
	}
	f.errors.Add(1)
	if after == 0 {
		return fmt.Errorf("list %v: %w: connection reset", h, ErrInjected)
	}
	// Fail part-way: after `after` names have been passed on.
	n := 0
	injected := fmt.Errorf("list %v: %w: connection reset after %d names", h, ErrInjected, after)
	err := f.b.List(ctx, t, func(fi backend.FileInfo) error {
		if n == after {
			return injected
		}
		n++
		return fn(fi)
	})
	if err == nil {
		// Fewer names than the failure point: fail at the end instead.
		return injected
	}
	return err
}

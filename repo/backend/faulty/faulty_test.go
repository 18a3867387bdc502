package faulty_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/backendtest"
	"github.com/pgvault/pgvault/repo/backend/faulty"
	"github.com/pgvault/pgvault/repo/backend/mem"
)

var ctx = context.Background()

func handle(i int) backend.Handle {
	return backend.Handle{Type: backend.PackFile, Name: fmt.Sprintf("%064x", i)}
}

// trace runs a fixed sequence of calls and records each outcome.
func trace(f *faulty.Backend) []string {
	var out []string
	data := bytes.Repeat([]byte("0123456789"), 100)
	for i := range 50 {
		h := handle(i % 7)
		err := f.Save(ctx, h, data)
		out = append(out, fmt.Sprint("save ", err != nil))
		buf, err := f.Load(ctx, h, 0, 0)
		out = append(out, fmt.Sprint("load ", err != nil, bytes.Equal(buf, data)))
	}
	return out
}

func TestDeterministicWithSeed(t *testing.T) {
	opts := faulty.Options{Seed: 42, Error: 0.2, ShortRead: 0.2, PartialWrite: 0.2, BitFlip: 0.2}
	a := faulty.New(mem.New(), opts)
	b := faulty.New(mem.New(), opts)
	ta, tb := trace(a), trace(b)
	if fmt.Sprint(ta) != fmt.Sprint(tb) {
		t.Fatalf("same seed, different faults:\n%v\n%v", ta, tb)
	}
	if a.Counts() != b.Counts() {
		t.Fatalf("same seed, different counts: %+v vs %+v", a.Counts(), b.Counts())
	}
	c := faulty.New(mem.New(), faulty.Options{Seed: 43, Error: 0.2, ShortRead: 0.2, PartialWrite: 0.2, BitFlip: 0.2})
	if fmt.Sprint(trace(c)) == fmt.Sprint(ta) {
		t.Fatal("different seeds gave the same faults")
	}
	got := a.Counts()
	if got.Errors == 0 || got.ShortReads == 0 || got.PartialWrites == 0 || got.BitFlips == 0 {
		t.Fatalf("counts %+v: some fault was never injected", got)
	}
}

func TestFaults(t *testing.T) {
	data := bytes.Repeat([]byte("pgvault!"), 512)
	tests := []struct {
		name  string
		opts  faulty.Options
		check func(t *testing.T, f *faulty.Backend, inner *mem.Backend)
	}{
		{"transient error", faulty.Options{Error: 1}, func(t *testing.T, f *faulty.Backend, inner *mem.Backend) {
			err := f.Save(ctx, handle(1), data)
			if !errors.Is(err, faulty.ErrInjected) || backend.IsPermanent(err) {
				t.Fatalf("Save: %v, want a transient injected error", err)
			}
			if _, err := inner.Stat(ctx, handle(1)); !errors.Is(err, backend.ErrNotFound) {
				t.Fatalf("a failed Save reached the backend: %v", err)
			}
			for _, err := range []error{
				f.Remove(ctx, handle(1)),
				f.List(ctx, backend.PackFile, func(backend.FileInfo) error { return nil }),
			} {
				if !errors.Is(err, faulty.ErrInjected) {
					t.Errorf("got %v, want an injected error", err)
				}
			}
			if _, err := f.Stat(ctx, handle(1)); !errors.Is(err, faulty.ErrInjected) {
				t.Errorf("Stat: %v, want an injected error", err)
			}
			if got := f.Counts().Errors; got != 4 {
				t.Errorf("Counts().Errors = %d, want 4", got)
			}
		}},
		{"short read is an error, never a short slice", faulty.Options{ShortRead: 1}, func(t *testing.T, f *faulty.Backend, inner *mem.Backend) {
			if err := f.Save(ctx, handle(1), data); err != nil {
				t.Fatal(err)
			}
			buf, err := f.Load(ctx, handle(1), 0, 0)
			if !errors.Is(err, backend.ErrShortRead) || buf != nil {
				t.Fatalf("Load: %d bytes, %v; want nil and ErrShortRead", len(buf), err)
			}
			if got := f.Counts().ShortReads; got != 1 {
				t.Errorf("Counts().ShortReads = %d, want 1", got)
			}
		}},
		{"partial write leaves a truncated object and fails", faulty.Options{PartialWrite: 1}, func(t *testing.T, f *faulty.Backend, inner *mem.Backend) {
			err := f.Save(ctx, handle(1), data)
			if !errors.Is(err, faulty.ErrInjected) || backend.IsPermanent(err) {
				t.Fatalf("Save: %v, want a transient injected error", err)
			}
			fi, err := inner.Stat(ctx, handle(1))
			if err != nil {
				t.Fatalf("no truncated object left behind: %v", err)
			}
			if fi.Size >= int64(len(data)) {
				t.Fatalf("object left behind has %d bytes, want fewer than %d", fi.Size, len(data))
			}
			f.SetEnabled(false)
			if err := f.Save(ctx, handle(1), data); err != nil {
				t.Fatal(err)
			}
			if buf, _ := inner.Load(ctx, handle(1), 0, 0); !bytes.Equal(buf, data) {
				t.Fatal("a later Save did not replace the truncated object")
			}
		}},
		{"bit flip corrupts one bit and succeeds", faulty.Options{BitFlip: 1}, func(t *testing.T, f *faulty.Backend, inner *mem.Backend) {
			if err := f.Save(ctx, handle(1), data); err != nil {
				t.Fatal(err)
			}
			buf, err := f.Load(ctx, handle(1), 0, 0)
			if err != nil || len(buf) != len(data) {
				t.Fatalf("Load: %d bytes, %v", len(buf), err)
			}
			diff := 0
			for i := range buf {
				for x := buf[i] ^ data[i]; x != 0; x &= x - 1 {
					diff++
				}
			}
			if diff != 1 {
				t.Fatalf("%d bits differ, want 1", diff)
			}
			if stored, _ := inner.Load(ctx, handle(1), 0, 0); !bytes.Equal(stored, data) {
				t.Fatal("the bit flip changed the stored object")
			}
		}},
		{"latency honours the context", faulty.Options{Latency: 1, LatencyDuration: time.Hour}, func(t *testing.T, f *faulty.Backend, inner *mem.Backend) {
			c, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			defer cancel()
			if _, err := f.Stat(c, handle(1)); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Stat: %v, want DeadlineExceeded", err)
			}
			if got := f.Counts().Latencies; got != 1 {
				t.Errorf("Counts().Latencies = %d, want 1", got)
			}
		}},
		{"faults only for chosen types", faulty.Options{Error: 1, Types: []backend.FileType{backend.LockFile}}, func(t *testing.T, f *faulty.Backend, inner *mem.Backend) {
			if err := f.Save(ctx, handle(1), data); err != nil {
				t.Fatalf("Save of a pack: %v, want no fault", err)
			}
			lock := backend.Handle{Type: backend.LockFile, Name: "l"}
			if err := f.Save(ctx, lock, data); !errors.Is(err, faulty.ErrInjected) {
				t.Fatalf("Save of a lock: %v, want an injected error", err)
			}
			if err := f.List(ctx, backend.PackFile, func(backend.FileInfo) error { return nil }); err != nil {
				t.Fatalf("List of packs: %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inner := mem.New()
			tc.opts.Seed = 1
			tc.check(t, faulty.New(inner, tc.opts), inner)
		})
	}
}

// TestConformanceWithoutFaults: the wrapper itself keeps the contract.
func TestConformanceWithoutFaults(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		return faulty.New(mem.New(), faulty.Options{Seed: 1, Latency: 0.05, LatencyDuration: time.Millisecond})
	})
}

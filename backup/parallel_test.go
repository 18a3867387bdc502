package backup

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

func TestForEach(t *testing.T) {
	var sum, running, peak atomic.Int64
	items := make([]int, 100)
	for i := range items {
		items[i] = i
	}
	err := forEach(context.Background(), 4, items, func(ctx context.Context, i int) error {
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		sum.Add(int64(i))
		running.Add(-1)
		return nil
	})
	if err != nil || sum.Load() != 4950 || peak.Load() > 4 {
		t.Fatalf("err %v, sum %d, peak %d", err, sum.Load(), peak.Load())
	}
	boom := errors.New("boom")
	var calls atomic.Int64
	err = forEach(context.Background(), 2, items, func(ctx context.Context, i int) error {
		calls.Add(1)
		if i == 3 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || calls.Load() == 100 {
		t.Fatalf("first error: %v after %d calls", err, calls.Load())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := forEach(ctx, 2, items, func(context.Context, int) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

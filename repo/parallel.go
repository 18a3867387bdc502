package repo

import (
	"context"
	"sync"
)

// eachParallel calls fn for every item and its position, at most n at a
// time, and returns the first error; the calls still running then see ctx
// cancelled and no new ones start.
func eachParallel[T any](ctx context.Context, items []T, n int, fn func(ctx context.Context, i int, it T) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
loop:
	for i, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(ctx, i, it); err != nil {
				cancel(err)
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}

package backup

import (
	"context"
	"sync"
)

// forEach runs fn on every item with at most par running at once. The
// first error cancels the rest and is returned; so is ctx's end.
func forEach[T any](ctx context.Context, par int, items []T, fn func(ctx context.Context, item T) error) error {
	if par <= 0 {
		par = 1
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan T)
	var wg sync.WaitGroup
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for item := range jobs {
				if err := fn(ctx, item); err != nil {
					cancel(err)
					return
				}
			}
		}()
	}
feed:
	for _, item := range items {
		select {
		case jobs <- item:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	return context.Cause(ctx)
}

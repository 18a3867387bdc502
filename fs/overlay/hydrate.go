package overlay

import (
	"context"
	"fmt"
	"time"
)

// HydrateOptions configure Hydrate.
type HydrateOptions struct {
	// Rate caps the copy in bytes per second; 0 copies as fast as the
	// repository delivers.
	Rate int64
	// Progress, if set, is called after every file with the bytes copied
	// so far.
	Progress func(copied int64)
}

// HydrateResult says what Hydrate copied.
type HydrateResult struct {
	Files    int64         `json:"files"`
	Bytes    int64         `json:"bytes"`
	Duration time.Duration `json:"duration"`
}

// hydrateStep is how much one step copies (and how often the rate cap is
// checked).
const hydrateStep = 4 << 20

// Hydrate copies every snapshot block that is not yet in the overlay into
// it, file by file, at most opts.Rate bytes per second, so that a
// long-lived instant restore converges to local-disk speed and stops
// depending on the repository: a file whose every block is present
// becomes local (and is then served from the upper file, by kernel
// passthrough where possible). WAL segments that are references to the
// repository (CloneWAL) are copied too, and no new ones are made. It runs
// alongside normal use: a block written meanwhile is never overwritten. It
// returns when everything is copied or ctx ends.
func (ov *Overlay) Hydrate(ctx context.Context, opts HydrateOptions) (*HydrateResult, error) {
	start := time.Now()
	res := &HydrateResult{}
	var sinceSync int64
	pace := func(n int64) error {
		res.Bytes += n
		if opts.Rate <= 0 {
			return ctx.Err()
		}
		due := time.Duration(float64(res.Bytes) / float64(opts.Rate) * float64(time.Second))
		if wait := due - time.Since(start); wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
			}
		}
		return nil
	}
	file := func(c *Node) error {
		for {
			n, done, err := ov.hydrateRun(ctx, c, hydrateStep)
			if err != nil {
				return err
			}
			sinceSync += n
			if err := pace(n); err != nil {
				return err
			}
			if done || sinceSync >= 64<<20 {
				if err := ov.Fsync(ctx, c); err != nil {
					return err
				}
				sinceSync = 0
			}
			if done {
				break
			}
		}
		res.Files++
		if opts.Progress != nil {
			opts.Progress(res.Bytes)
		}
		return nil
	}
	var walk func(d *Node) error
	walk = func(d *Node) error {
		ents, err := ov.List(ctx, d)
		if err != nil {
			return err
		}
		for _, e := range ents {
			c, err := ov.Lookup(ctx, d, e.Name)
			if err != nil {
				continue // removed meanwhile
			}
			switch c.kind {
			case KindDir:
				if err := walk(c); err != nil {
					return err
				}
			case KindFile:
				if c.base == nil {
					continue // created in the overlay; clones come after the walk
				}
				if err := file(c); err != nil {
					return err
				}
			}
		}
		return nil
	}
	err := walk(ov.root)
	if err == nil {
		// Then the WAL copies, wherever PostgreSQL renamed them to. Under
		// mu, which CloneWAL commits under: every clone is either made
		// before, and so in the list below, or refused.
		ov.mu.Lock()
		ov.noClones = true
		ov.mu.Unlock()
		for _, n := range ov.fileNodes() {
			ov.mu.Lock()
			removed := n.removed
			ov.mu.Unlock()
			if removed || n.base != nil || !cloned(n.file) {
				continue
			}
			if err = file(n); err != nil {
				break
			}
		}
	}
	res.Duration = time.Since(start)
	return res, err
}

// hydrateRun copies the next run of blocks of n that are not present (at
// most limit bytes) from the snapshot into the upper file. It returns the
// bytes copied and whether the file has nothing left to copy.
func (ov *Overlay) hydrateRun(ctx context.Context, n *Node, limit int64) (int64, bool, error) {
	f := n.file
	bs := ov.bs
	f.mu.RLock()
	if f.local {
		f.mu.RUnlock()
		return 0, true, nil
	}
	nb := ceilDiv(f.size, bs)
	first := f.present.firstClear(nb)
	if first < 0 {
		f.mu.RUnlock()
		return 0, true, nil
	}
	last := first
	for last+1 < nb && !f.present.has(last+1) && (last+2-first)*bs <= max(limit, bs) {
		last++
	}
	start := first * bs
	upto := min((last+1)*bs, f.baseLimit)
	f.mu.RUnlock()

	buf := make([]byte, (last+1-first)*bs)
	if upto > start {
		if err := ov.readBaseUncached(ctx, n, buf[:upto-start], start); err != nil {
			return 0, false, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.local {
		return 0, true, nil
	}
	copied, err := ov.storeBaseLocked(n, first, buf)
	if err != nil {
		return copied, false, fmt.Errorf("write overlay upper file: %w", err)
	}
	return copied, f.present.allBelow(ceilDiv(f.size, bs)), nil
}

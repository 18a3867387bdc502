package repo

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/pack"
)

// rereadDelays are the waits before each further read of an object whose
// bytes failed authentication. A read can be damaged on its way (a bit
// flipped in transit or in a buffer) while the stored object is whole, and
// on a store whose uploads are not atomic a reader can see the truncated
// object of an upload that failed part-way until the writer's retry
// replaces it (the retry wrapper waits 100-200 ms, then 200-400 ms). One
// second in all covers the writer's first two retries; damage that is
// still there after it is in the stored object.
var rereadDelays = [...]time.Duration{200 * time.Millisecond, 800 * time.Millisecond}

// isDamage reports whether err says the bytes read are not what was sealed.
func isDamage(err error) bool {
	return errors.Is(err, chunk.ErrCorrupt) || errors.Is(err, chunk.ErrMetaCorrupt) || errors.Is(err, pack.ErrCorrupt)
}

// readAuthentic calls read, which loads and opens one object; while read
// finds the bytes damaged, it waits and calls it again, once after each of
// rereadDelays. It returns the first damage error when no read was whole:
// a re-read that fails otherwise (the connection, say) does not hide it.
func readAuthentic(ctx context.Context, log *slog.Logger, what string, read func(context.Context) error) error {
	first := read(ctx)
	if first == nil || !isDamage(first) {
		return first
	}
	for i, d := range rereadDelays {
		// Info, as the retry wrapper's retries: a command prints its
		// failure in one line, and when every read is damaged its error
		// says so; the agent logs at info. repo check reports a damaged
		// read that was whole again as a warning of its own.
		log.Info("object read damaged; reading it again", "object", what, "read", i+2, "err", first)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return first
		case <-t.C:
		}
		err := read(ctx)
		if err == nil {
			log.Info("object read damaged, then whole when read again: the damage was on the way, not in storage", "object", what, "reads", i+2)
			return nil
		}
	}
	return first
}

package overlay

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// walEntries remembers the WAL catalogue entries an instant mount looked
// up. Recovery asks for each segment's entry several times (restore_command
// looks the file up and opens it, and reading the copy it made in pg_wal
// needs the entry again), and PostgreSQL probes for the next timeline's
// history file at the start and at the end of recovery: on an object store
// each is a round trip. A complete segment or history file never changes
// once stored (a different one under the same name is refused), so its
// entry is kept for the life of the mount; that a history file is missing
// is kept for historyMissTTL, since one appears only when a server is
// promoted. Nothing else is kept: a .partial grows, and a segment that is
// missing now is often stored a moment later.
type walEntries struct {
	mu    sync.Mutex
	found map[walKey]*repo.WALFile
	miss  map[walKey]time.Time // history files not found, and when
}

type walKey struct {
	tli  uint32
	name string
}

// historyMissTTL is how long a missing history file is answered from
// memory.
const historyMissTTL = 10 * time.Second

// walEntriesMax bounds the entries kept; past it the cache starts over
// (recovery moves forward one segment at a time).
const walEntriesMax = 256

// LoadWALFile returns the WAL catalogue's entry for the file called name
// of timeline tli, answered from memory when walEntries allows; a missing
// file is repo.ErrWALNotFound. Safe for concurrent use.
func (ov *Overlay) LoadWALFile(ctx context.Context, tli uint32, name string) (*repo.WALFile, error) {
	c := &ov.walEntries
	k := walKey{tli, name}
	history := wal.Classify(name) == wal.KindHistory
	c.mu.Lock()
	if wf, ok := c.found[k]; ok {
		c.mu.Unlock()
		return wf, nil
	}
	if t, ok := c.miss[k]; ok && history && ov.now().Sub(t) < historyMissTTL {
		c.mu.Unlock()
		return nil, repo.ErrWALNotFound
	}
	c.mu.Unlock()
	wf, err := ov.r.LoadWALFile(ctx, tli, name)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err == nil && !wf.Partial:
		if len(c.found) >= walEntriesMax || c.found == nil {
			c.found = map[walKey]*repo.WALFile{}
		}
		c.found[k] = wf
	case errors.Is(err, repo.ErrWALNotFound) && history:
		if len(c.miss) >= walEntriesMax || c.miss == nil {
			c.miss = map[walKey]time.Time{}
		}
		c.miss[k] = ov.now()
	}
	return wf, err
}

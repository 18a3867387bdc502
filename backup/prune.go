package backup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgvault/pgvault/repo"
)

// PruneOptions configure Prune.
type PruneOptions struct {
	Policy Policy
	// Apply deletes; without it Prune only reports what it would delete.
	Apply bool
	// Grace is passed to repo.Prune (0: repo.DefaultPruneGrace).
	Grace time.Duration
	// Now is the clock for age rules (nil: time.Now).
	Now func() time.Time
}

// PruneReport says what retention decided and what garbage collection did.
type PruneReport struct {
	Applied    bool              `json:"applied"`
	Backups    []Decision        `json:"backups"`
	WALKeep    string            `json:"wal_kept_from_lsn,omitempty"`
	WALDropped []WALDecision     `json:"wal_removed"`
	Repo       *repo.PruneResult `json:"repository"`
}

// Prune applies a retention policy: it deletes the base backups the policy
// does not keep and the WAL no kept backup needs, then removes the blobs
// nothing references any more. The caller holds an exclusive lock (no
// backup runs); WAL streaming may go on (see repo.Prune).
func Prune(ctx context.Context, r *repo.Repository, opts PruneOptions) (*PruneReport, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	backups, err := Backups(ctx, r)
	if err != nil {
		return nil, err
	}
	decisions := PlanRetention(backups, opts.Policy, now())
	keep, drop := map[string]bool{}, map[string]bool{}
	for _, d := range decisions {
		keep[d.ID], drop[d.ID] = d.Keep, !d.Keep
	}
	var retained []Backup
	segSize := uint64(0)
	for _, b := range backups {
		if keep[b.Snapshot.ID] {
			retained = append(retained, b)
			segSize = b.Info.SegmentSize()
		}
	}
	entries, err := r.ListWAL(ctx)
	if err != nil {
		return nil, err
	}
	rep := &PruneReport{Applied: opts.Apply, Backups: decisions, WALDropped: []WALDecision{}}
	if len(retained) > 0 {
		keepFrom, drop := PlanWALRetention(entries, retained, segSize)
		rep.WALKeep = keepFrom.String()
		if drop != nil {
			rep.WALDropped = drop
		}
	}
	dropWAL := map[[2]string]bool{}
	for _, d := range rep.WALDropped {
		dropWAL[[2]string{fmt.Sprint(d.Timeline), d.Name}] = true
	}
	gc := repo.PruneOptions{
		Grace:          opts.Grace,
		DryRun:         !opts.Apply,
		IgnoreSnapshot: func(id string) bool { return drop[id] },
		IgnoreWAL:      func(tli uint32, name string) bool { return dropWAL[[2]string{fmt.Sprint(tli), name}] },
	}
	if opts.Apply {
		for _, d := range decisions {
			if d.Keep {
				continue
			}
			if err := r.DeleteSnapshot(ctx, d.ID); err != nil && !errors.Is(err, repo.ErrSnapshotNotFound) {
				return nil, err
			}
		}
		for _, d := range rep.WALDropped {
			if err := r.DeleteWAL(ctx, d.Timeline, d.Name); err != nil && !errors.Is(err, repo.ErrWALNotFound) {
				return nil, err
			}
		}
	}
	if rep.Repo, err = r.Prune(ctx, gc); err != nil {
		return rep, err
	}
	return rep, nil
}

package repo

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/backend"
)

const snapshotLabel = "snapshot"

// Snapshot is a manifest: one saved tree of files plus what its owner
// wants to remember about it. Meta is opaque to the repository (the backup
// package keeps PostgreSQL's facts there).
type Snapshot struct {
	ID        string          `json:"-"` // hex SHA-256 of the stored object
	Version   int             `json:"version"`
	Kind      string          `json:"kind"` // e.g. "basebackup", "files"
	Label     string          `json:"label,omitempty"`
	Hostname  string          `json:"hostname"`
	StartTime time.Time       `json:"start_time"`
	EndTime   time.Time       `json:"end_time"`
	Root      chunk.ID        `json:"root"`
	RootNode  Node            `json:"root_node"` // the root directory's own metadata
	Summary   Summary         `json:"summary"`
	Meta      json.RawMessage `json:"meta,omitempty"`
	// Attachments are meta blobs the owner keeps beside the tree, by name
	// (a base backup's relation catalogue): too large for Meta, which
	// every listing reads. Prune keeps them; check reads them.
	Attachments map[string]chunk.ID `json:"attachments,omitempty"`
}

// LoadAttachment returns the attachment name of s; ok is false when s has
// none by that name.
func (r *Repository) LoadAttachment(ctx context.Context, s *Snapshot, name string) (data []byte, ok bool, err error) {
	id, ok := s.Attachments[name]
	if !ok {
		return nil, false, nil
	}
	data, err = r.LoadBlob(ctx, id)
	if err != nil {
		return nil, true, fmt.Errorf("snapshot %s: attachment %s: %w", s.ShortID(), name, err)
	}
	return data, true, nil
}

// ShortID is the 8-digit prefix used in listings.
func (s *Snapshot) ShortID() string {
	if len(s.ID) < 8 {
		return s.ID
	}
	return s.ID[:8]
}

// Summary counts what a snapshot holds and what it added.
type Summary struct {
	Files       int64 `json:"files"`
	Dirs        int64 `json:"dirs"`
	Symlinks    int64 `json:"symlinks"`
	Bytes       int64 `json:"bytes"`        // logical size of all files
	Chunks      int64 `json:"chunks"`       // data chunks referenced
	NewChunks   int64 `json:"new_chunks"`   // data chunks not stored before
	NewBytes    int64 `json:"new_bytes"`    // plaintext bytes of new chunks
	StoredBytes int64 `json:"stored_bytes"` // sealed bytes added to the repository
}

// saveSnapshot stores the manifest and returns its ID.
func (r *Repository) saveSnapshot(ctx context.Context, s *Snapshot) error {
	s.Version = 1
	plain, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	sealed := r.codec.SealMeta(nil, snapshotLabel, plain)
	sum := sha256.Sum256(sealed)
	s.ID = hex.EncodeToString(sum[:])
	if err := r.be.Save(ctx, backend.Handle{Type: backend.SnapshotFile, Name: s.ID}, sealed); err != nil {
		return fmt.Errorf("save snapshot %s: %w", s.ShortID(), err)
	}
	return nil
}

// DecodeSnapshot parses a manifest's plaintext.
func DecodeSnapshot(plain []byte) (*Snapshot, error) {
	var s Snapshot
	if err := json.Unmarshal(plain, &s); err != nil {
		return nil, fmt.Errorf("snapshot manifest: %w", err)
	}
	if s.Version != 1 {
		return nil, fmt.Errorf("snapshot manifest version %d is not supported", s.Version)
	}
	if s.Root.IsNull() {
		return nil, errors.New("snapshot manifest has no root tree")
	}
	s.RootNode.Name, s.RootNode.Type = "", NodeDir
	root := s.Root
	s.RootNode.Subtree = &root
	return &s, nil
}

// LoadSnapshot reads one manifest by full ID.
func (r *Repository) LoadSnapshot(ctx context.Context, id string) (*Snapshot, error) {
	var plain []byte
	err := readAuthentic(ctx, r.log, "snapshot "+short(id), func(ctx context.Context) error {
		sealed, err := r.be.Load(ctx, backend.Handle{Type: backend.SnapshotFile, Name: id}, 0, 0)
		if errors.Is(err, backend.ErrNotFound) {
			return fmt.Errorf("snapshot %s: %w", short(id), ErrSnapshotNotFound)
		}
		if err != nil {
			return fmt.Errorf("load snapshot %s: %w", short(id), err)
		}
		if plain, err = r.codec.OpenMeta(snapshotLabel, sealed); err != nil {
			return fmt.Errorf("snapshot %s: %w", short(id), err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s, err := DecodeSnapshot(plain)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", short(id), err)
	}
	s.ID = id
	return s, nil
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// Snapshots lists every snapshot, oldest first.
func (r *Repository) Snapshots(ctx context.Context) ([]*Snapshot, error) {
	var ids []string
	err := r.be.List(ctx, backend.SnapshotFile, func(fi backend.FileInfo) error {
		ids = append(ids, fi.Name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	out := make([]*Snapshot, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, id := range ids {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err // another snapshot failed to load
			}
			var err error
			out[i], err = r.LoadSnapshot(gctx, id)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *Snapshot) int {
		return cmp.Or(a.StartTime.Compare(b.StartTime), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// FindSnapshot resolves "latest", a full ID or a unique ID prefix.
func (r *Repository) FindSnapshot(ctx context.Context, ref string) (*Snapshot, error) {
	snaps, err := r.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	if ref == "latest" || ref == "" {
		if len(snaps) == 0 {
			return nil, fmt.Errorf("latest: %w (the repository has no snapshots yet)", ErrSnapshotNotFound)
		}
		return snaps[len(snaps)-1], nil
	}
	var found *Snapshot
	for _, s := range snaps {
		if strings.HasPrefix(s.ID, ref) {
			if found != nil {
				return nil, fmt.Errorf("%q: %w", ref, ErrAmbiguousSnapshot)
			}
			found = s
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%q: %w", ref, ErrSnapshotNotFound)
	}
	return found, nil
}

// DeleteSnapshot removes a manifest. Its blobs stay until prune.
func (r *Repository) DeleteSnapshot(ctx context.Context, id string) error {
	if err := r.be.Remove(ctx, backend.Handle{Type: backend.SnapshotFile, Name: id}); err != nil {
		if errors.Is(err, backend.ErrNotFound) {
			return fmt.Errorf("snapshot %s: %w", short(id), ErrSnapshotNotFound)
		}
		return fmt.Errorf("delete snapshot %s: %w", short(id), err)
	}
	return nil
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

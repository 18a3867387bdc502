package repo

import (
	"context"
	"fmt"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/index"
	"github.com/pgvault/pgvault/repo/pack"
)

// Stats sums up a repository.
type Stats struct {
	Snapshots    int     `json:"snapshots"`
	WALFiles     int     `json:"wal_files"`
	Packs        int     `json:"packs"`
	Blobs        int     `json:"blobs"`
	DataBlobs    int     `json:"data_blobs"`
	MetaBlobs    int     `json:"meta_blobs"`
	LogicalBytes int64   `json:"logical_bytes"` // all snapshots' files, as if each were stored whole
	WALBytes     int64   `json:"wal_bytes"`     // logical size of the WAL catalogue (when counted)
	UniqueBytes  int64   `json:"unique_bytes"`  // plaintext of distinct data blobs
	StoredBytes  int64   `json:"stored_bytes"`  // every pack, as stored
	DedupRatio   float64 `json:"dedup_ratio"`   // logical / unique
	Compression  float64 `json:"compression_ratio"`
	// IndexBytesPerBlob is the size of one index entry: what the index
	// costs per chunk, on disk and (memory-mapped) in the page cache.
	IndexBytesPerBlob int `json:"index_bytes_per_blob"`
}

// Stats walks the snapshot manifests and the index; it does not read data.
func (r *Repository) Stats(ctx context.Context) (*Stats, error) {
	st := &Stats{IndexBytesPerBlob: index.EntrySize}
	snaps, err := r.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	st.Snapshots = len(snaps)
	for _, s := range snaps {
		st.LogicalBytes += s.Summary.Bytes
	}
	wal, err := r.ListWAL(ctx)
	if err != nil {
		return nil, err
	}
	st.WALFiles = len(wal)
	if err := r.be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		st.Packs++
		st.StoredBytes += fi.Size
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	seen := map[chunk.ID]bool{}
	var dataStored int64
	r.idx.Each(func(e index.Entry) {
		if seen[e.ID] {
			return
		}
		seen[e.ID] = true
		st.Blobs++
		if e.Type == pack.DataBlob {
			st.DataBlobs++
			st.UniqueBytes += int64(e.PlainLen)
			dataStored += int64(e.Length)
		} else {
			st.MetaBlobs++
		}
	})
	if st.UniqueBytes > 0 {
		st.DedupRatio = float64(st.LogicalBytes) / float64(st.UniqueBytes)
	}
	if dataStored > 0 {
		st.Compression = float64(st.UniqueBytes) / float64(dataStored)
	}
	return st, nil
}

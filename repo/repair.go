package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/index"
	"github.com/pgvault/pgvault/repo/pack"
)

// RebuildResult reports what RebuildIndex did.
type RebuildResult struct {
	Packs        int       `json:"packs"`
	Blobs        int       `json:"blobs"`
	DamagedPacks []string  `json:"damaged_packs"` // left out: their headers do not open
	Replaced     []string  `json:"replaced_indexes"`
	NewIndex     string    `json:"new_index"`
	Problems     []Problem `json:"problems"`
}

// RebuildIndex reads the header of every pack and writes one new index
// object covering them all, then removes the old index objects. It recovers
// from lost or damaged index objects and indexes the packs an interrupted
// writer left behind. The caller must hold an exclusive lock.
func (r *Repository) RebuildIndex(ctx context.Context) (*RebuildResult, error) {
	res := &RebuildResult{}
	var packs []backend.FileInfo
	if err := r.be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		packs = append(packs, fi)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	var oldIndexes []string
	if err := r.be.List(ctx, backend.IndexFile, func(fi backend.FileInfo) error {
		oldIndexes = append(oldIndexes, fi.Name)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list index: %w", err)
	}
	var infos []index.PackInfo
	var entries []index.Entry
	for _, fi := range packs {
		id, err := chunk.ParseID(fi.Name)
		if err != nil {
			continue
		}
		blobs, err := r.readPackHeader(ctx, id, fi.Size)
		if err != nil {
			if errors.Is(err, pack.ErrCorrupt) {
				res.DamagedPacks = append(res.DamagedPacks, fi.Name)
				res.Problems = append(res.Problems, Problem{Object: "pack " + fi.Name, Message: err.Error()})
				continue
			}
			return nil, err
		}
		typ := pack.DataBlob
		if len(blobs) > 0 {
			typ = blobs[0].Type
		}
		infos = append(infos, index.PackInfo{ID: id, Size: uint32(fi.Size), Type: typ})
		for _, b := range blobs {
			entries = append(entries, index.Entry{ID: b.ID, Pack: id, Type: b.Type, Offset: b.Offset, Length: b.Length, PlainLen: b.PlainLen})
		}
	}
	slices.SortFunc(infos, func(a, b index.PackInfo) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	var supersedes []chunk.ID
	for _, name := range oldIndexes {
		if id, err := chunk.ParseID(name); err == nil {
			supersedes = append(supersedes, id)
		}
	}
	plain, err := index.Encode(supersedes, infos, entries)
	if err != nil {
		return nil, err
	}
	tab, err := index.Decode(plain)
	if err != nil {
		return nil, err
	}
	sealed := r.codec.SealMeta(nil, indexLabel, plain)
	newID := chunk.ID(sha256Sum(sealed))
	if err := r.be.Save(ctx, backend.Handle{Type: backend.IndexFile, Name: newID.String()}, sealed); err != nil {
		return nil, fmt.Errorf("save rebuilt index: %w", err)
	}
	res.NewIndex, res.Packs, res.Blobs = newID.String(), len(infos), tab.Len()
	for _, name := range oldIndexes {
		if name == newID.String() {
			continue
		}
		if err := r.be.Remove(ctx, backend.Handle{Type: backend.IndexFile, Name: name}); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return res, fmt.Errorf("remove old index %s: %w", short(name), err)
		}
		res.Replaced = append(res.Replaced, name)
	}
	r.idx.close()
	r.idx = newMasterIndex(r.be, r.codec, r.idx.cacheDir, r.log)
	return res, r.idx.load(ctx)
}

// readPackHeader loads only the trailer and header of a pack, reading
// them again when they are damaged: a pack reported damaged is left out of
// the rebuilt index.
func (r *Repository) readPackHeader(ctx context.Context, id chunk.ID, size int64) ([]pack.Blob, error) {
	var blobs []pack.Blob
	err := readAuthentic(ctx, r.log, "pack "+id.Short()+" header", func(ctx context.Context) (err error) {
		blobs, err = r.readPackHeaderOnce(ctx, id, size)
		return err
	})
	return blobs, err
}

func (r *Repository) readPackHeaderOnce(ctx context.Context, id chunk.ID, size int64) ([]pack.Blob, error) {
	h := backend.Handle{Type: backend.PackFile, Name: id.String()}
	if size < pack.TrailerSize {
		return nil, fmt.Errorf("pack %s: %w: %d bytes", id.Short(), pack.ErrCorrupt, size)
	}
	trailer, err := r.be.Load(ctx, h, size-pack.TrailerSize, pack.TrailerSize)
	if err != nil {
		return nil, fmt.Errorf("read pack %s: %w", id.Short(), err)
	}
	off, hl, err := pack.ParseTrailer(trailer, size)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", id.Short(), err)
	}
	sealed, err := r.be.Load(ctx, h, off, hl)
	if err != nil {
		return nil, fmt.Errorf("read pack %s: %w", id.Short(), err)
	}
	blobs, err := pack.OpenHeader(r.codec, sealed, off)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", id.Short(), err)
	}
	return blobs, nil
}

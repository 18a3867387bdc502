package repo

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/index"
)

// errNotIndexed sends readChunks' caller to its one-at-a-time reads,
// which reload the index before calling a chunk missing.
var errNotIndexed = errors.New("a chunk is not in the index")

// readChunks decodes chunks, consecutive pieces of one file, each into
// its place in out (exactly their total size). Chunks of one pack that
// lie close together (preloadGap, preloadRunMax, as for the mount's
// preload) are read with one request, whatever their order in the file:
// a backup seals chunks on every core, so a file's chunks sit in its
// packs nearly, but not exactly, in file order. A chunk that occurs
// twice (zero pages) is read once. Any failure is left to the caller's
// one-at-a-time reads, which re-read damage and follow repacks.
func (r *Repository) readChunks(ctx context.Context, chunks []ChunkRef, out []byte) error {
	type place struct {
		e   index.Entry
		at  int64
		ref ChunkRef
	}
	offs := make([]int64, len(chunks)+1)
	for i, c := range chunks {
		offs[i+1] = offs[i] + int64(c.Size)
	}
	first := make(map[chunk.ID]int, len(chunks))
	var places []place
	var dups [][2]int // {first occurrence, repeat}
	for i, c := range chunks {
		if j, ok := first[c.ID]; ok {
			dups = append(dups, [2]int{j, i})
			continue
		}
		e, ok := r.idx.Lookup(c.ID)
		if !ok {
			return errNotIndexed
		}
		first[c.ID] = i
		places = append(places, place{e, offs[i], c})
	}
	slices.SortFunc(places, func(a, b place) int {
		return cmp.Or(bytes.Compare(a.e.Pack[:], b.e.Pack[:]), cmp.Compare(a.e.Offset, b.e.Offset))
	})
	for len(places) > 0 {
		start, end := int64(places[0].e.Offset), int64(places[0].e.Offset)+int64(places[0].e.Length)
		n := 1
		for ; n < len(places); n++ {
			e := places[n].e
			off := int64(e.Offset)
			if e.Pack != places[0].e.Pack || off < end || off-end > preloadGap || off+int64(e.Length)-start > preloadRunMax {
				break
			}
			end = off + int64(e.Length)
		}
		sealed, err := r.be.Load(ctx, backend.Handle{Type: backend.PackFile, Name: places[0].e.Pack.String()}, start, end-start)
		if err != nil {
			return err
		}
		for _, p := range places[:n] {
			size := int64(p.ref.Size)
			dst := out[p.at : p.at : p.at+size]
			from := int64(p.e.Offset) - start
			plain, err := r.openBlob(dst, p.e.Type, p.ref.ID, sealed[from:from+int64(p.e.Length)])
			if err != nil {
				return err
			}
			if int64(len(plain)) != size {
				return fmt.Errorf("chunk %s has %d bytes, want %d: %w", p.ref.ID.Short(), len(plain), size, ErrContentCorrupt)
			}
			if size > 0 && &plain[0] != &out[p.at] {
				copy(out[p.at:], plain)
			}
		}
		places = places[n:]
	}
	for _, d := range dups {
		copy(out[offs[d[1]]:offs[d[1]+1]], out[offs[d[0]]:offs[d[0]+1]])
	}
	return nil
}

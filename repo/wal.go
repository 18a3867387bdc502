package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/pack"
)

const walLabel = "wal"

// WALFile is a WAL catalogue entry: one stored WAL file (segment, partial
// segment or timeline history) of a timeline. The repository treats names
// as opaque; the stream package knows what they mean.
type WALFile struct {
	Timeline uint32     `json:"timeline"`
	Name     string     `json:"name"`
	Size     int64      `json:"size"`
	Partial  bool       `json:"partial,omitempty"`
	Created  time.Time  `json:"created"`
	Chunks   []ChunkRef `json:"chunks"`
}

// WALEntry is a catalogue listing row (without loading the entry).
type WALEntry struct {
	Timeline uint32
	Name     string
	ModTime  time.Time
}

func walHandle(tli uint32, name string) backend.Handle {
	return backend.Handle{Type: backend.WALFile, Name: fmt.Sprintf("%08X/%s", tli, name)}
}

// SaveWAL stores data as WAL file name of timeline tli and records it in
// the catalogue once its chunks are durable. Saving identical content
// again is a no-op; different content under the name of a complete file
// is ErrWALConflict. A partial file may be replaced.
func (r *Repository) SaveWAL(ctx context.Context, tli uint32, name string, data []byte, partial bool) (*WALFile, error) {
	h := walHandle(tli, name)
	if err := h.Valid(); err != nil {
		return nil, err
	}
	cs := r.cfg.ChunkSize
	piece := func(i int) []byte { return data[i*cs : min((i+1)*cs, len(data))] }
	refs := make([]ChunkRef, (len(data)+cs-1)/cs)
	// archive_command waits for every push: every core hashes, and then
	// seals, the segment's chunks (about 90 ms of CPU for 16 MiB).
	var hashing errgroup.Group
	hashing.SetLimit(runtime.GOMAXPROCS(0))
	for i := range refs {
		hashing.Go(func() error {
			refs[i] = ChunkRef{ID: r.hasher.ID(piece(i)), Size: uint32(len(piece(i)))}
			return nil
		})
	}
	hashing.Wait()
	if !partial {
		old, err := r.LoadWALFile(ctx, tli, name)
		switch {
		case err == nil && slices.Equal(old.Chunks, refs):
			return old, nil
		case err == nil && !old.Partial:
			return nil, fmt.Errorf("WAL %s (timeline %d): %w", name, tli, ErrWALConflict)
		case err != nil && !errors.Is(err, ErrWALNotFound):
			return nil, err
		}
	}
	typ := r.walBlobType(name)
	s := r.getSaver()
	saving, sctx := errgroup.WithContext(ctx)
	saving.SetLimit(runtime.GOMAXPROCS(0))
	for i := range refs {
		saving.Go(func() error {
			if err := sctx.Err(); err != nil {
				return err // another chunk failed
			}
			_, err := s.save(sctx, typ, piece(i), refs[i].ID)
			return err
		})
	}
	if err := saving.Wait(); err != nil {
		return nil, fmt.Errorf("save WAL %s: %w", name, err)
	}
	if err := r.Flush(ctx); err != nil {
		return nil, fmt.Errorf("save WAL %s: %w", name, err)
	}
	wf := &WALFile{Timeline: tli, Name: name, Size: int64(len(data)), Partial: partial, Created: r.Now().UTC(), Chunks: refs}
	plain, err := json.Marshal(wf)
	if err != nil {
		return nil, err
	}
	if err := r.be.Save(ctx, h, r.codec.SealMeta(nil, walLabel+"/"+h.Name, plain)); err != nil {
		return nil, fmt.Errorf("save WAL %s: %w", name, err)
	}
	return wf, nil
}

// walBlobType is the blob type of a WAL file's chunks. Format 2 stores
// timeline history and backup history files as metadata: they hold
// timeline switch points and backup positions, not database contents,
// and a write-only key's WAL check and PITR planning must read them.
func (r *Repository) walBlobType(name string) pack.BlobType {
	if r.cfg.SealsToPublicKey() && (strings.HasSuffix(name, ".history") || strings.HasSuffix(name, ".backup")) {
		return pack.MetaBlob
	}
	return pack.DataBlob
}

// WALExtends reports whether the WAL file stored under name is longer
// than data and starts with it: the same WAL, more of it. A write-only
// key cannot read the stored bytes: it compares the IDs of data's whole
// chunks with the stored chunks' and takes a last, partly filled chunk on
// trust (a diverging copy of the same segment on the same timeline would
// need two primaries at once).
func (r *Repository) WALExtends(ctx context.Context, tli uint32, name string, data []byte) (bool, error) {
	wf, err := r.LoadWALFile(ctx, tli, name)
	if errors.Is(err, ErrWALNotFound) {
		return false, nil
	}
	if err != nil || wf.Size <= int64(len(data)) {
		return false, err
	}
	if !r.WriteOnly() {
		stored, _, err := r.LoadWAL(ctx, tli, name)
		if err != nil {
			return false, err
		}
		return bytes.HasPrefix(stored, data), nil
	}
	cs := r.cfg.ChunkSize
	for i := 0; (i+1)*cs <= len(data); i++ {
		if i >= len(wf.Chunks) || wf.Chunks[i].ID != r.hasher.ID(data[i*cs:(i+1)*cs]) {
			return false, nil
		}
	}
	return true, nil
}

// LoadWALFile reads a catalogue entry.
func (r *Repository) LoadWALFile(ctx context.Context, tli uint32, name string) (*WALFile, error) {
	h := walHandle(tli, name)
	if err := h.Valid(); err != nil {
		return nil, err
	}
	var plain []byte
	err := readAuthentic(ctx, r.log, "WAL catalogue entry "+h.Name, func(ctx context.Context) error {
		sealed, err := r.be.Load(ctx, h, 0, 0)
		if errors.Is(err, backend.ErrNotFound) {
			return fmt.Errorf("WAL %s (timeline %d): %w", name, tli, ErrWALNotFound)
		}
		if err != nil {
			return fmt.Errorf("load WAL %s: %w", name, err)
		}
		// The label binds the entry to its name: a renamed object will not open.
		if plain, err = r.codec.OpenMeta(walLabel+"/"+h.Name, sealed); err != nil {
			return fmt.Errorf("WAL catalogue entry %s: %w", h.Name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	wf, err := DecodeWALFile(plain)
	if err != nil {
		return nil, fmt.Errorf("WAL catalogue entry %s: %w", h.Name, err)
	}
	return wf, nil
}

// DecodeWALFile parses and validates a catalogue entry's plaintext.
func DecodeWALFile(plain []byte) (*WALFile, error) {
	var wf WALFile
	dec := json.NewDecoder(bytes.NewReader(plain))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&wf); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	var sum int64
	for _, c := range wf.Chunks {
		if c.Size == 0 || c.Size > chunk.MaxBlobSize {
			return nil, fmt.Errorf("chunk %s has size %d", c.ID.Short(), c.Size)
		}
		sum += int64(c.Size)
	}
	if sum != wf.Size {
		return nil, fmt.Errorf("chunks hold %d bytes, size is %d", sum, wf.Size)
	}
	return &wf, nil
}

// LoadWAL returns the bytes of a stored WAL file.
func (r *Repository) LoadWAL(ctx context.Context, tli uint32, name string) ([]byte, *WALFile, error) {
	wf, err := r.LoadWALFile(ctx, tli, name)
	if err != nil {
		return nil, nil, err
	}
	// Each chunk is decoded straight into its place in the file, and not
	// kept in the blob cache: a WAL file is read once (restore_command),
	// and a copy of 16 MiB was a quarter of wal fetch's CPU time. Chunks
	// stored close together in one pack (a segment's usually are) are
	// read with one request.
	out := make([]byte, wf.Size)
	offs := make([]int64, len(wf.Chunks)+1)
	for i, c := range wf.Chunks {
		offs[i+1] = offs[i] + int64(c.Size)
	}
	if len(wf.Chunks) > 1 && r.readChunks(ctx, wf.Chunks, out) == nil {
		return out, wf, nil
	}
	// One at a time, with ReadBlob's re-reads and index reloads.
	for i, c := range wf.Chunks {
		if err := r.readChunkInto(ctx, c, out[offs[i]:offs[i+1]]); err != nil {
			return nil, nil, fmt.Errorf("WAL %s: %w", name, err)
		}
	}
	return out, wf, nil
}

// ListWAL lists the catalogue, in no particular order.
func (r *Repository) ListWAL(ctx context.Context) ([]WALEntry, error) {
	var out []WALEntry
	err := r.be.List(ctx, backend.WALFile, func(fi backend.FileInfo) error {
		dir, name, ok := strings.Cut(fi.Name, "/")
		if !ok {
			return nil
		}
		tli, err := strconv.ParseUint(dir, 16, 32)
		if err != nil {
			return nil
		}
		out = append(out, WALEntry{Timeline: uint32(tli), Name: name, ModTime: fi.ModTime})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list WAL: %w", err)
	}
	return out, nil
}

// DeleteWAL removes a catalogue entry; its chunks stay until prune.
func (r *Repository) DeleteWAL(ctx context.Context, tli uint32, name string) error {
	if err := r.be.Remove(ctx, walHandle(tli, name)); err != nil {
		if errors.Is(err, backend.ErrNotFound) {
			return fmt.Errorf("WAL %s (timeline %d): %w", name, tli, ErrWALNotFound)
		}
		return fmt.Errorf("delete WAL %s: %w", name, err)
	}
	return nil
}

// readChunkInto reads one chunk into out, which is exactly its size.
func (r *Repository) readChunkInto(ctx context.Context, c ChunkRef, out []byte) error {
	data, err := r.ReadBlob(ctx, c.ID, out[:0:len(out)])
	if err != nil {
		return err
	}
	if len(data) != len(out) {
		return fmt.Errorf("chunk %s has %d bytes, want %d: %w", c.ID.Short(), len(data), len(out), ErrContentCorrupt)
	}
	if len(data) > 0 && &data[0] != &out[0] {
		copy(out, data) // decoded elsewhere (a cached blob)
	}
	return nil
}

// Package mem is an in-memory backend for unit tests. It honours the full
// backend contract (atomic saves, exact-range loads, ErrNotFound) so tests
// built on it exercise the same code paths as real storage.
package mem

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pgvault/pgvault/repo/backend"
)

// Backend keeps objects in a map keyed by their path.
type Backend struct {
	mu      sync.RWMutex
	objects map[string]object
	now     func() time.Time
}

type object struct {
	data    []byte
	modTime time.Time
}

var _ backend.Backend = (*Backend)(nil)

// New returns an empty in-memory backend.
func New() *Backend { return &Backend{objects: make(map[string]object)} }

func (b *Backend) Location() string { return "mem:" }

func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.objects[h.Path()] = object{data: bytes.Clone(data), modTime: b.clock()}
	return nil
}

func (b *Backend) Load(ctx context.Context, h backend.Handle, offset, length int64) ([]byte, error) {
	if err := h.Valid(); err != nil {
		return nil, backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.RLock()
	o, ok := b.objects[h.Path()]
	b.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("load %v: %w", h, backend.ErrNotFound)
	}
	size := int64(len(o.data))
	if offset < 0 || length < 0 || offset > size {
		return nil, fmt.Errorf("load %v at %d+%d of %d bytes: %w", h, offset, length, size, backend.ErrShortRead)
	}
	end := size
	if length > 0 {
		end = offset + length
		if end > size {
			return nil, fmt.Errorf("load %v at %d+%d of %d bytes: %w", h, offset, length, size, backend.ErrShortRead)
		}
	}
	return bytes.Clone(o.data[offset:end]), nil
}

func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := h.Valid(); err != nil {
		return backend.FileInfo{}, backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, err
	}
	b.mu.RLock()
	o, ok := b.objects[h.Path()]
	b.mu.RUnlock()
	if !ok {
		return backend.FileInfo{}, fmt.Errorf("stat %v: %w", h, backend.ErrNotFound)
	}
	return backend.FileInfo{Name: h.Name, Size: int64(len(o.data)), ModTime: o.modTime}, nil
}

func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.objects[h.Path()]; !ok {
		return fmt.Errorf("remove %v: %w", h, backend.ErrNotFound)
	}
	delete(b.objects, h.Path())
	return nil
}

func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var infos []backend.FileInfo
	b.mu.RLock()
	for p, o := range b.objects {
		if name, ok := nameFromPath(t, p); ok {
			infos = append(infos, backend.FileInfo{Name: name, Size: int64(len(o.data)), ModTime: o.modTime})
		}
	}
	b.mu.RUnlock()
	for _, fi := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(fi); err != nil {
			return err
		}
	}
	return nil
}

// nameFromPath inverts Handle.Path for objects of type t.
func nameFromPath(t backend.FileType, p string) (string, bool) {
	if t == backend.ConfigFile {
		return "", p == "config"
	}
	prefix := backend.Dir(t) + "/"
	if !strings.HasPrefix(p, prefix) {
		return "", false
	}
	rest := p[len(prefix):]
	if t == backend.PackFile {
		if i := strings.LastIndexByte(rest, '/'); i >= 0 {
			rest = rest[i+1:]
		}
	}
	return rest, true
}

// ListAll lists every object (backend.Inventory).
func (b *Backend) ListAll(ctx context.Context, fn func(name string) error) error {
	b.mu.RLock()
	names := make([]string, 0, len(b.objects))
	for k := range b.objects {
		names = append(names, k)
	}
	b.mu.RUnlock()
	slices.Sort(names)
	for _, n := range names {
		if err := fn(n); err != nil {
			return err
		}
	}
	return nil
}

// Put stores data at path p as it is, outside the repository layout: for
// tests of what a store holds besides a repository.
func (b *Backend) Put(p string, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.objects[p] = object{data: bytes.Clone(data), modTime: b.clock()}
}

func (b *Backend) Close() error { return nil }

// SetClock sets the time stamped on objects saved from now on (nil: the
// real time), for tests of age-dependent logic such as prune's grace.
func (b *Backend) SetClock(now func() time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.now = now
}

func (b *Backend) clock() time.Time {
	if b.now != nil {
		return b.now()
	}
	return time.Now()
}

// Corrupt overwrites one byte of a stored object, for tests of damage
// detection. It returns false when the object or offset does not exist.
func (b *Backend) Corrupt(h backend.Handle, offset int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.objects[h.Path()]
	if !ok || offset < 0 || offset >= len(o.data) {
		return false
	}
	o.data[offset] ^= 0x40
	return true
}

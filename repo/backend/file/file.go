// Package file stores a repository in a local (or locally mounted)
// directory. Saves are atomic and durable: write to a temporary file in the
// destination folder, fsync, rename, fsync the folder.
package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/pgvault/pgvault/internal/atomicfile"
	"github.com/pgvault/pgvault/repo/backend"
)

// Backend is a repository in the directory Root.
type Backend struct {
	root string
}

var _ backend.Backend = (*Backend)(nil)

// New returns a backend rooted at dir. The directory need not exist yet:
// the first Save creates it.
func New(dir string) (*Backend, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, backend.Permanent(fmt.Errorf("file backend %q: %w", dir, err))
	}
	return &Backend{root: abs}, nil
}

func (b *Backend) Location() string { return "file://" + b.root }

func (b *Backend) filename(h backend.Handle) string {
	return filepath.Join(b.root, filepath.FromSlash(h.Path()))
}

// classify marks errors that retrying cannot fix.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %w", backend.ErrNotFound, err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return backend.Permanent(fmt.Errorf("disk full: %w", err))
	case errors.Is(err, syscall.EROFS), errors.Is(err, fs.ErrPermission):
		return backend.Permanent(err)
	}
	return err
}

func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	final := b.filename(h)
	dir := filepath.Dir(final)
	owner := b.owner()
	if err := mkdirAll(dir, owner); err != nil {
		return classify(fmt.Errorf("save %v: %w", h, err))
	}
	// The file is synced by hand and Commit syncs no folder: syncDir
	// accepts file systems that cannot sync a folder (EINVAL), which
	// atomicfile.SyncDir does not.
	f, err := atomicfile.Create(final, atomicfile.Options{Perm: 0o600, Owner: owner, NoSync: true})
	if err != nil {
		return classify(fmt.Errorf("save %v: %w", h, err))
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return classify(fmt.Errorf("save %v: %w", h, err))
	}
	if err := f.Sync(); err != nil {
		return classify(fmt.Errorf("save %v: %w", h, err))
	}
	if err := f.Commit(); err != nil {
		return classify(fmt.Errorf("save %v: %w", h, err))
	}
	if err := syncDir(dir); err != nil {
		return classify(fmt.Errorf("save %v: sync folder: %w", h, err))
	}
	return nil
}

// owner is who must own what root creates in the repository: the owner
// of its root folder when that is another user. Otherwise a `pgvault
// backup` run once with sudo in a repository of the postgres user (or an
// agent run as root next to PostgreSQL's restore_command) would leave
// files only root can read, and the next archive-get as postgres would
// fail on them. nil when the files may stay the caller's.
func (b *Backend) owner() *atomicfile.Owner {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(b.root)
	if err != nil {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	return &atomicfile.Owner{UID: int(st.Uid), GID: int(st.Gid)}
}

// mkdirAll is os.MkdirAll that gives each folder it creates to owner.
func mkdirAll(dir string, owner *atomicfile.Owner) error {
	if owner == nil {
		return os.MkdirAll(dir, 0o700)
	}
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := mkdirAll(parent, owner); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // made meanwhile by another saver
		}
		return err
	}
	return os.Lchown(dir, owner.UID, owner.GID)
}

func syncDir(dir string) error {
	if err := atomicfile.SyncDir(dir); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

func (b *Backend) Load(ctx context.Context, h backend.Handle, offset, length int64) ([]byte, error) {
	if err := h.Valid(); err != nil {
		return nil, backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.Open(b.filename(h))
	if err != nil {
		return nil, classify(fmt.Errorf("load %v: %w", h, err))
	}
	defer f.Close()
	if length == 0 {
		fi, err := f.Stat()
		if err != nil {
			return nil, classify(fmt.Errorf("load %v: %w", h, err))
		}
		length = fi.Size() - offset
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("load %v at %d+%d: %w", h, offset, length, backend.ErrShortRead)
	}
	buf := make([]byte, length)
	n, err := f.ReadAt(buf, offset)
	if errors.Is(err, io.EOF) && int64(n) < length {
		return nil, fmt.Errorf("load %v at %d+%d: got %d bytes: %w", h, offset, length, n, backend.ErrShortRead)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, classify(fmt.Errorf("load %v: %w", h, err))
	}
	return buf, nil
}

func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := h.Valid(); err != nil {
		return backend.FileInfo{}, backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, err
	}
	fi, err := os.Stat(b.filename(h))
	if err != nil {
		return backend.FileInfo{}, classify(fmt.Errorf("stat %v: %w", h, err))
	}
	return backend.FileInfo{Name: h.Name, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Remove(b.filename(h)); err != nil {
		return classify(fmt.Errorf("remove %v: %w", h, err))
	}
	return nil
}

func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if t == backend.ConfigFile {
		return backend.ListConfig(ctx, b.Stat, fn)
	}
	root := filepath.Join(b.root, backend.Dir(t))
	// Packs live one folder down (packs/ab/abcd...); WAL entries may sit one
	// folder down (wal/<timeline>/<segment>). Deeper files are not ours.
	maxDepth := 1
	if t == backend.PackFile || t == backend.WALFile {
		maxDepth = 2
	}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		rel, _ := filepath.Rel(root, p)
		depth := strings.Count(filepath.ToSlash(rel), "/") + 1
		if d.IsDir() {
			if p != root && depth >= maxDepth {
				return fs.SkipDir
			}
			return nil
		}
		// Temporary files of interrupted saves: atomicfile's, and the
		// ".tmp-<hex>" of versions before it (IsTemp matches both).
		if atomicfile.IsTemp(d.Name()) || !d.Type().IsRegular() {
			return nil
		}
		name := filepath.ToSlash(rel)
		if t == backend.PackFile {
			name = d.Name()
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while listing
		}
		if err != nil {
			return err
		}
		return fn(backend.FileInfo{Name: name, Size: info.Size(), ModTime: info.ModTime()})
	})
	if err != nil {
		return classify(fmt.Errorf("list %v: %w", t, err))
	}
	return nil
}

// ListAll lists every file under the folder (backend.Inventory).
func (b *Backend) ListAll(ctx context.Context, fn func(name string) error) error {
	err := filepath.WalkDir(b.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == b.root && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(b.root, p)
		return fn(filepath.ToSlash(rel))
	})
	if err != nil {
		return classify(fmt.Errorf("list %s: %w", b.root, err))
	}
	return nil
}

func (b *Backend) Close() error { return nil }

package overlay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync/atomic"
	"syscall"
)

// Path-based access to the view, without FUSE: for preparing a data
// directory before it is mounted, and for reading what changed after
// (synthetic backups). Paths are slash-separated and relative to the
// view's root ("" and "/" are the root). A missing path is an error that
// matches syscall.ENOENT and fs.ErrNotExist. Like the node operations
// they are safe for concurrent use.

// walkPath finds the node at a slash-separated path of the view.
func (ov *Overlay) walkPath(ctx context.Context, p string) (*Node, error) {
	n := ov.root
	for _, name := range splitPath(p) {
		c, err := ov.Lookup(ctx, n, name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		n = c
	}
	return n, nil
}

func splitPath(p string) []string {
	var out []string
	for _, e := range strings.Split(path.Clean("/"+p), "/") {
		if e != "" {
			out = append(out, e)
		}
	}
	return out
}

// Exists reports whether the path exists in the view.
func (ov *Overlay) Exists(ctx context.Context, p string) bool {
	_, err := ov.walkPath(ctx, p)
	return err == nil
}

// Stat returns the attributes of the node at path p of the view.
func (ov *Overlay) Stat(ctx context.Context, p string) (Attr, error) {
	n, err := ov.walkPath(ctx, p)
	if err != nil {
		return Attr{}, err
	}
	return ov.Attr(n), nil
}

// ReadFile returns the content of the file at path p of the view, read
// whole into memory: for small files (OpenFile reads large ones).
func (ov *Overlay) ReadFile(ctx context.Context, p string) ([]byte, error) {
	n, err := ov.walkPath(ctx, p)
	if err != nil {
		return nil, err
	}
	if n.kind != KindFile {
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	buf := make([]byte, n.file.currentSize())
	got, err := ov.read(ctx, n, buf, 0, nil)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return buf[:got], nil
}

// WriteFile replaces (or creates, with mode and owner) the file at path p
// with data. Call Sync to make it durable.
func (ov *Overlay) WriteFile(ctx context.Context, p string, data []byte, mode uint32, owner Owner) error {
	dir, name := path.Split(path.Clean("/" + p))
	d, err := ov.walkPath(ctx, dir)
	if err != nil {
		return err
	}
	n, err := ov.Lookup(ctx, d, name)
	if errors.Is(err, syscall.ENOENT) {
		n, err = ov.Create(ctx, d, name, KindFile, mode, owner, "")
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if n.kind != KindFile {
		return fmt.Errorf("%s is not a regular file", p)
	}
	if err := ov.truncate(ctx, n, 0); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if _, err := ov.write(ctx, n, data, 0); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// RemovePath removes the file, symbolic link or empty directory at path
// p; a missing path is not an error.
func (ov *Overlay) RemovePath(ctx context.Context, p string) error {
	dir, name := path.Split(path.Clean("/" + p))
	d, err := ov.walkPath(ctx, dir)
	if err != nil {
		return err
	}
	c, err := ov.Lookup(ctx, d, name)
	if errors.Is(err, syscall.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := ov.Remove(ctx, d, name, c.kind == KindDir); err != nil {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

// File is a regular file of the view open for reading without FUSE: its
// current content, whatever part of it the overlay holds and whatever
// part still comes from the repository. It reads what the file holds at
// the time of each read. A File counts as an open handle, so a file
// removed meanwhile stays readable until Close. Safe for concurrent use.
type File struct {
	ov     *Overlay
	n      *Node
	path   string
	closed atomic.Bool
}

var _ io.ReaderAt = (*File)(nil)

// OpenFile opens the regular file at path p of the view for reading.
// The caller must Close it.
func (ov *Overlay) OpenFile(ctx context.Context, p string) (*File, error) {
	n, err := ov.walkPath(ctx, p)
	if err != nil {
		return nil, err
	}
	if n.kind != KindFile {
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	ov.Opened(n, false)
	return &File{ov: ov, n: n, path: p}, nil
}

// Size is the file's size now.
func (f *File) Size() int64 { return f.n.file.currentSize() }

// ReadAtContext reads len(p) bytes at off, as io.ReaderAt does: fewer
// only at the end of the file, with io.EOF. A repository read failure is
// an error naming the file, never wrong bytes. With copy-on-read on, what
// it fetches from the repository is copied into the overlay, as any read.
func (f *File) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %s: negative offset", f.path)
	}
	n, err := f.ov.read(ctx, f.n, p, off, nil)
	if err != nil {
		return n, fmt.Errorf("read %s at %d: %w", f.path, off, err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// ReadAt implements io.ReaderAt with a background context.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	return f.ReadAtContext(context.Background(), p, off)
}

// Close releases the file; calls after the first do nothing. Reads
// after Close are not allowed.
func (f *File) Close() error {
	if !f.closed.Swap(true) {
		f.ov.Released(f.n, false)
	}
	return nil
}

// PathOf is n's path in the view now ("" for the root): a path a later
// rename may change.
func (ov *Overlay) PathOf(n *Node) string { return ov.pathOf(n) }

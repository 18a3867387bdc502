// Package atomicfile writes a file so that anyone who opens its name sees
// either the old content or the whole new content, never a part: the data
// goes to a temporary file in the same folder, which is synced, renamed
// over the name, and the folder synced (kopia's atomicfile and restic's
// internal/fs do the same). It imports nothing of pgvault's, so every
// layer may use it.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Options say how the file is made. The zero value makes a durable,
// private (0600) file owned by the caller.
type Options struct {
	// Perm is the file's mode, set exactly (the umask does not apply);
	// 0 means 0600.
	Perm os.FileMode
	// Owner, when set, is given the file before it is published (the
	// caller must be allowed to chown: in practice, root).
	Owner *Owner
	// NoSync skips the fsync of the file and of its folder: for caches
	// that can be rebuilt, and for files whose reader makes them durable
	// itself (restore_command's output, which PostgreSQL syncs). The
	// rename still makes the switch atomic for readers.
	NoSync bool
}

// Owner is a numeric user and group.
type Owner struct{ UID, GID int }

// tempInfix marks a temporary file: ".<name>.tmp-<random>".
const tempInfix = ".tmp-"

// IsTemp reports whether name (a base name) is one of this package's
// temporary files, left behind by a crash between create and rename, so
// that folder listings can skip it and clean-ups can remove it.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, tempInfix)
}

// File is a file being written; its name appears only at Commit. Write
// to it through the embedded *os.File. Not safe for concurrent use.
type File struct {
	*os.File
	path string
	opts Options
	done bool
}

// Create starts writing path. The caller must end with Commit or Abort
// (Abort after Commit does nothing, so `defer f.Abort()` is the idiom).
func Create(path string, opts Options) (*File, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+tempInfix+"*")
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return &File{File: f, path: path, opts: opts}, nil
}

// Commit gives the file its mode and owner, syncs it, renames it over the
// path and syncs the folder. On an error the temporary file is removed
// and the path keeps its old content.
func (f *File) Commit() error {
	if f.done {
		return errors.New("atomicfile: commit after commit or abort")
	}
	f.done = true
	err := f.finish()
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.File.Name(), f.path)
	}
	if err != nil {
		os.Remove(f.File.Name())
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	if !f.opts.NoSync {
		if err := SyncDir(filepath.Dir(f.path)); err != nil {
			return fmt.Errorf("write %s: sync folder: %w", f.path, err)
		}
	}
	return nil
}

func (f *File) finish() error {
	perm := f.opts.Perm
	if perm == 0 {
		perm = 0o600
	}
	if err := f.File.Chmod(perm); err != nil {
		return err
	}
	if o := f.opts.Owner; o != nil {
		if err := f.File.Chown(o.UID, o.GID); err != nil {
			return err
		}
	}
	if f.opts.NoSync {
		return nil
	}
	return f.File.Sync()
}

// Abort removes the temporary file unless Commit ran.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	os.Remove(f.File.Name())
}

// WriteFile writes data to path atomically (see the package doc).
func WriteFile(path string, data []byte, opts Options) error {
	f, err := Create(path, opts)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Commit()
}

// SyncDir makes the entries of a folder durable (a created, renamed or
// removed name survives a crash once this returns).
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

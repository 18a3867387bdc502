package backend

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"time"
)

// FileType is the kind of an object, which fixes the folder it lives in.
type FileType uint8

const (
	ConfigFile   FileType = iota + 1 // "config": the one repository config object
	KeyFile                          // keys/<id>: wrapped master keys
	PackFile                         // packs/<2 hex>/<id>: blob containers
	IndexFile                        // index/<id>: blob -> pack maps
	SnapshotFile                     // snapshots/<id>: snapshot manifests
	LockFile                         // locks/<id>: writer and prune locks
	WALFile                          // wal/<timeline>/<segment>: WAL catalogue entries
)

// AllTypes lists every FileType, in an order suitable for copying a repo.
var AllTypes = []FileType{ConfigFile, KeyFile, PackFile, IndexFile, SnapshotFile, LockFile, WALFile}

func (t FileType) String() string {
	switch t {
	case ConfigFile:
		return "config"
	case KeyFile:
		return "key"
	case PackFile:
		return "pack"
	case IndexFile:
		return "index"
	case SnapshotFile:
		return "snapshot"
	case LockFile:
		return "lock"
	case WALFile:
		return "wal"
	}
	return fmt.Sprintf("filetype(%d)", uint8(t))
}

// Handle names one object. Name is empty for ConfigFile. For WALFile the
// name may contain one "/" (timeline folder); for every other type it is a
// single path element.
type Handle struct {
	Type FileType
	Name string
}

func (h Handle) String() string {
	if h.Type == ConfigFile {
		return "config"
	}
	return h.Type.String() + " " + h.Name
}

// Valid reports whether h can name an object.
func (h Handle) Valid() error {
	switch h.Type {
	case ConfigFile:
		if h.Name != "" {
			return fmt.Errorf("invalid handle %v: config has no name", h)
		}
		return nil
	case KeyFile, PackFile, IndexFile, SnapshotFile, LockFile:
		if !validElem(h.Name) {
			return fmt.Errorf("invalid handle %v: bad name", h)
		}
		return nil
	case WALFile:
		dir, file := path.Split(h.Name)
		if dir != "" && !validElem(dir[:len(dir)-1]) || !validElem(file) {
			return fmt.Errorf("invalid handle %v: bad name", h)
		}
		return nil
	}
	return fmt.Errorf("invalid handle: unknown type %d", uint8(h.Type))
}

func validElem(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 200 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '/' || c == '\\' || c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// Path is the object's path relative to the repository root. Every backend
// uses the same layout, so a repository can be copied between them with any
// file-copying tool.
func (h Handle) Path() string {
	switch h.Type {
	case ConfigFile:
		return "config"
	case KeyFile:
		return "keys/" + h.Name
	case PackFile:
		if len(h.Name) >= 2 {
			return "packs/" + h.Name[:2] + "/" + h.Name
		}
		return "packs/" + h.Name
	case IndexFile:
		return "index/" + h.Name
	case SnapshotFile:
		return "snapshots/" + h.Name
	case LockFile:
		return "locks/" + h.Name
	case WALFile:
		return "wal/" + h.Name
	}
	return "invalid/" + h.Name
}

// Dir is the folder that holds every object of type t (the listing root).
func Dir(t FileType) string {
	switch t {
	case ConfigFile:
		return ""
	case KeyFile:
		return "keys"
	case PackFile:
		return "packs"
	case IndexFile:
		return "index"
	case SnapshotFile:
		return "snapshots"
	case LockFile:
		return "locks"
	case WALFile:
		return "wal"
	}
	return "invalid"
}

// FileInfo describes one stored object.
type FileInfo struct {
	Name    string // as in Handle.Name
	Size    int64
	ModTime time.Time // zero when the backend cannot tell
}

// Backend stores the objects of one repository.
//
// Contract, for every implementation:
//   - Save is atomic: a reader sees either no object or the whole object,
//     never a prefix, even if the process is killed mid-write. Once Save
//     returns nil the object is durable (fsynced, or acknowledged by the
//     object store). Save replaces an existing object of the same handle;
//     callers only do that for objects whose content is a function of
//     their name, or for locks and WAL partials that they own. Once Save
//     returns nil, it no longer uses data: the caller may reuse it.
//   - Load returns exactly length bytes starting at offset; length 0 means
//     "to the end". A short object is an error, never a short slice. A
//     missing object is an error matching ErrNotFound.
//   - Stat and Remove of a missing object return an error matching
//     ErrNotFound.
//   - List calls fn once per object of type t (for WALFile, names include the
//     timeline folder), in no particular order; an error from fn stops the
//     listing and is returned. An empty or missing folder is not an error.
//   - Every method may be called concurrently from many goroutines.
//   - Errors that retrying cannot fix satisfy IsPermanent; everything else
//     may be retried by the caller (see package retry).
//   - A cancelled ctx ends the call promptly with ctx.Err() in the chain.
type Backend interface {
	// Location names the backend for messages, without secrets.
	Location() string
	Save(ctx context.Context, h Handle, data []byte) error
	Load(ctx context.Context, h Handle, offset, length int64) ([]byte, error)
	Stat(ctx context.Context, h Handle) (FileInfo, error)
	Remove(ctx context.Context, h Handle) error
	List(ctx context.Context, t FileType, fn func(FileInfo) error) error
	Close() error
}

// Inventory is implemented by stores that can list every object under
// their location, repository layout or not: repo.Init refuses a location
// that already holds something (a data directory, another tool's files).
type Inventory interface {
	// ListAll calls fn with the path of every object (file) under the
	// location, relative to it; folders alone are not objects.
	ListAll(ctx context.Context, fn func(name string) error) error
}

// InventoryOf finds the Inventory of be, or of the backend it wraps.
func InventoryOf(be Backend) (Inventory, bool) {
	for be != nil {
		if inv, ok := be.(Inventory); ok {
			return inv, true
		}
		u, ok := be.(interface{ Unwrap() Backend })
		if !ok {
			return nil, false
		}
		be = u.Unwrap()
	}
	return nil, false
}

// ErrNotFound is matched (errors.Is) by every error about a missing object.
var ErrNotFound = errors.New("object not found")

// ErrShortRead means an object was smaller than the requested range.
var ErrShortRead = errors.New("object shorter than requested range")

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that retrying cannot fix (bad credentials,
// access denied, invalid configuration). It returns nil for nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether retrying the call that returned err is
// pointless: the object is missing, the request is invalid, access is
// denied, or the caller gave up (context cancelled or expired).
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	var p *permanentError
	return errors.As(err, &p) ||
		errors.Is(err, ErrNotFound) ||
		errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, fs.ErrPermission)
}

// ListConfig lists the single config object through stat, for backends'
// List of ConfigFile: the config has no folder of its own to list.
func ListConfig(ctx context.Context, stat func(context.Context, Handle) (FileInfo, error), fn func(FileInfo) error) error {
	fi, err := stat(ctx, Handle{Type: ConfigFile})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return fn(fi)
}

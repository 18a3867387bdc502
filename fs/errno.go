package fs

import (
	"context"
	"errors"
	iofs "io/fs"
	"syscall"

	"github.com/pgvault/pgvault/repo"
)

// toErrno maps an error to the errno a FUSE method returns. go-fuse's own
// mapping (fs.ToErrno) does not unwrap, so every method of this package
// goes through here. Anything unknown, a repository read failure above
// all, is EIO: the reader gets an error, never wrong bytes.
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return syscall.EINTR
	case errors.As(err, &errno):
		return errno
	case errors.Is(err, repo.ErrFileNotFound), errors.Is(err, repo.ErrWALNotFound),
		errors.Is(err, repo.ErrSnapshotNotFound), errors.Is(err, iofs.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, iofs.ErrPermission):
		return syscall.EACCES
	case errors.Is(err, iofs.ErrExist):
		return syscall.EEXIST
	}
	return syscall.EIO
}

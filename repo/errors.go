package repo

import "errors"

// Sentinel errors callers branch on; cmd/pgvault maps them to messages and
// exit codes.
var (
	// ErrWrongPassword: no key in the repository opens with the password
	// given (or the objects are not a pgvault repository's).
	ErrWrongPassword = errors.New("wrong password or not a pgvault repository")
	// ErrNotRepository: there is no repository config at the location.
	ErrNotRepository = errors.New("not a pgvault repository")
	// ErrRepoExists: init found a repository already there.
	ErrRepoExists = errors.New("a repository already exists there")
	// ErrNoPassword: the repository is encrypted and no password was given.
	ErrNoPassword = errors.New("no repository password given")
	// ErrSnapshotNotFound: no snapshot matches the ID or prefix given.
	ErrSnapshotNotFound = errors.New("no such snapshot")
	// ErrAmbiguousSnapshot: an ID prefix matches several snapshots.
	ErrAmbiguousSnapshot = errors.New("snapshot ID prefix is ambiguous")
	// ErrFileNotFound: no file at that path in the snapshot.
	ErrFileNotFound = errors.New("no such file in snapshot")
	// ErrLocked: another process holds a conflicting lock.
	ErrLocked = errors.New("repository is locked")
	// ErrBlobNotFound: no index names the blob.
	ErrBlobNotFound = errors.New("blob not in index")
	// ErrNotEmpty: Init was pointed at a location that holds other files.
	ErrNotEmpty = errors.New("the location is not empty")
	// ErrWALNotFound: the WAL catalogue has no such segment.
	ErrWALNotFound = errors.New("no such WAL file in repository")
	// ErrWALConflict: a different WAL file is already stored under the name.
	ErrWALConflict = errors.New("a different WAL file is already stored under that name")
)

package pg

import (
	"errors"
	"fmt"
	"strings"
)

// The PostgreSQL majors this pgvault knows: it reads their pg_control, WAL
// page headers, base backup protocol and backup manifests, and each is
// tested end to end (docs/reference/postgresql-versions.md). A newer major
// may change any of these, so it is refused rather than misread.
const (
	// OldestStreamMajor is the oldest server WAL streaming and archiving
	// support.
	OldestStreamMajor = 13
	// OldestBackupMajor is the oldest server base backups support (the
	// BASE_BACKUP protocol of 15).
	OldestBackupMajor = 15
	// NewestMajor is the newest major this pgvault knows.
	NewestMajor = 18
)

// ErrUnsupportedServer is matched by an error about a server version this
// pgvault does not support (too old, or newer than it knows).
var ErrUnsupportedServer = errors.New("unsupported PostgreSQL version")

// CheckMajor checks a server_version string ("18.4", "15.10 (Debian
// ...)") for work that needs oldest or newer; the error says what to do.
// what names the work ("base backups", "WAL streaming").
func CheckMajor(version string, oldest int, what string) error {
	v, _, _ := strings.Cut(strings.TrimSpace(version), " ")
	major := Major(v)
	switch {
	case major == 0:
		return fmt.Errorf("%w: cannot read the server version %q", ErrUnsupportedServer, version)
	case major < oldest:
		return fmt.Errorf("%w: PostgreSQL %s is too old: pgvault %s need %d or newer; upgrade PostgreSQL", ErrUnsupportedServer, v, what, oldest)
	case major > NewestMajor:
		return fmt.Errorf("%w: PostgreSQL %s is newer than this pgvault knows (%d to %d): its WAL, pg_control or backup protocol may have changed; upgrade pgvault before backing it up", ErrUnsupportedServer, v, oldest, NewestMajor)
	}
	return nil
}

// Supported says in one line whether this pgvault supports a server for
// WAL streaming and for base backups (doctor, wal preflight).
func Supported(version string) (ok bool, msg string) {
	v, _, _ := strings.Cut(strings.TrimSpace(version), " ")
	if err := CheckMajor(version, OldestStreamMajor, "WAL streaming"); err != nil {
		return false, strings.TrimPrefix(err.Error(), ErrUnsupportedServer.Error()+": ")
	}
	if err := CheckMajor(version, OldestBackupMajor, "base backups"); err != nil {
		return true, fmt.Sprintf("PostgreSQL %s: supported for WAL streaming and archiving; base backups need %d or newer", v, OldestBackupMajor)
	}
	return true, fmt.Sprintf("PostgreSQL %s: supported by this pgvault (%d to %d)", v, OldestStreamMajor, NewestMajor)
}

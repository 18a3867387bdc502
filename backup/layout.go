package backup

import (
	"path"
	"regexp"
	"strings"

	"github.com/pgvault/pgvault/repo"
)

// relFileName matches relation segment files: <relfilenode>[_fork][.segno].
var relFileName = regexp.MustCompile(`^[0-9]+(_(fsm|vm|init))?(\.[0-9]+)?$`)

// IsRelationFile reports whether p (slash-separated, relative to the data
// directory or a tablespace root) is a relation file that PostgreSQL
// updates in place page by page, and so is cut into fixed, page-aligned
// chunks. Everything else is cut at content-defined boundaries.
func IsRelationFile(p string) bool {
	dir, name := path.Split(p)
	if !relFileName.MatchString(name) {
		return false
	}
	dir = strings.TrimSuffix(dir, "/")
	parts := strings.Split(dir, "/")
	switch {
	case dir == "global":
		return true
	case len(parts) == 2 && parts[0] == "base":
		return true
	// pg_tblspc/<oid>/<PG_15_...>/<dboid>/<relfilenode>
	case len(parts) == 4 && parts[0] == "pg_tblspc":
		return true
	// A tablespace stored on its own: <PG_15_...>/<dboid>/<relfilenode>
	case len(parts) == 2 && strings.HasPrefix(parts[0], "PG_"):
		return true
	}
	return false
}

// walSegmentName matches WAL segment files (and their .partial form).
var walSegmentName = regexp.MustCompile(`^pg_wal/[0-9A-F]{24}(\.partial)?$`)

// SplitFor returns the chunking to use for the file at p. WAL segments in
// a standalone backup are cut like the WAL archive cuts them, so the two
// share their chunks.
func SplitFor(p string) repo.SplitKind {
	if IsRelationFile(p) || walSegmentName.MatchString(p) {
		return repo.SplitFixed
	}
	return repo.SplitCDC
}

// Storage is how a base backup stores one entry of the data directory.
type Storage int

const (
	// Store: stored (a folder with what it holds).
	Store Storage = iota
	// Omit: left out.
	Omit
	// EmptyDir: stored as an empty folder (its content is rebuilt at
	// startup, or comes from the WAL archive).
	EmptyDir
)

// StorageOf says how a base backup stores the entry name of folder dir
// (slash-separated, relative to the data directory; "" is the top), by
// the rules of PostgreSQL's own base backup that a local backup follows;
// siblings are the folder's entry names (an unlogged relation is stored
// as its init fork alone). pg_wal is kept as an empty folder with
// archive_status in it.
func StorageOf(dir, name string, siblings map[string]bool) Storage {
	rel := path.Join(dir, name)
	switch {
	case skipLocal(name, isDatabaseDir(dir), siblings):
		return Omit
	case localEmptyDirs[name], rel == "pg_wal/archive_status":
		return EmptyDir
	case dir == "pg_wal":
		return Omit
	}
	return Store
}

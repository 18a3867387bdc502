package backup

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Database is one database of a backup: what a partial restore
// (--db-include) needs to tell its files from the others'.
type Database struct {
	OID  uint32 `json:"oid"`
	Name string `json:"name"`
}

// systemDatabases are restored whatever --db-include says: PostgreSQL
// needs template1 to start and template0 for CREATE DATABASE, and postgres
// is where tools connect first (pgBackRest keeps the same three).
var systemDatabases = []string{"template0", "template1", "postgres"}

// listDatabasesSQL lists every database, the ones that do not allow
// connections (template0) included.
const listDatabasesSQL = "SELECT oid::text, datname FROM pg_database ORDER BY pg_database.oid"

// ListDatabases reads the databases of a server over a plain session.
func ListDatabases(ctx context.Context, session *pgconn.PgConn) ([]Database, error) {
	res := session.ExecParams(ctx, listDatabasesSQL, nil, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, fmt.Errorf("list databases: %w", res.Err)
	}
	var dbs []Database
	for _, row := range res.Rows {
		oid, err := strconv.ParseUint(string(row[0]), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("list databases: oid %q: %w", row[0], err)
		}
		dbs = append(dbs, Database{OID: uint32(oid), Name: string(row[1])})
	}
	return dbs, nil
}

// ErrNoDatabaseList is matched when a partial restore is asked of a backup
// that recorded no database list.
var ErrNoDatabaseList = errors.New("the backup has no database list")

// ErrNoSuchDatabase is matched when --db-include names a database the
// backup does not hold.
var ErrNoSuchDatabase = errors.New("no such database in the backup")

// ExcludedDatabases returns the OIDs of the databases of info that a
// restore including only the named ones leaves out: every database that
// is neither named nor a system database.
func ExcludedDatabases(info *Info, include []string) (map[uint32]bool, error) {
	if len(include) == 0 {
		return nil, nil
	}
	if len(info.Databases) == 0 {
		return nil, fmt.Errorf("%w: it was taken without a plain session to the server (or by an older pgvault): restore it whole", ErrNoDatabaseList)
	}
	var names []string
	byName := map[string]uint32{}
	for _, d := range info.Databases {
		byName[d.Name] = d.OID
		names = append(names, d.Name)
	}
	keep := map[uint32]bool{}
	for _, n := range append(slices.Clone(systemDatabases), include...) {
		oid, ok := byName[n]
		if !ok {
			if slices.Contains(systemDatabases, n) {
				continue
			}
			slices.Sort(names)
			return nil, fmt.Errorf("%w: %q; the backup's databases are %s", ErrNoSuchDatabase, n, strings.Join(names, ", "))
		}
		keep[oid] = true
	}
	out := map[uint32]bool{}
	for _, d := range info.Databases {
		if !keep[d.OID] {
			out[d.OID] = true
		}
	}
	return out, nil
}

// excludedRelationFile reports whether p (a path in the snapshot) is a
// relation file of a database in excluded: base/<db>/<file> or
// pg_tblspc/<ts>/<version>/<db>/<file>, where file is a relation's
// segment, free space map, visibility map or init fork. The database's
// other files (PG_VERSION, pg_filenode.map) are restored as they are.
func excludedRelationFile(p string, excluded map[uint32]bool) bool {
	if len(excluded) == 0 {
		return false
	}
	parts := strings.Split(p, "/")
	var dbPart string
	switch {
	case len(parts) == 3 && parts[0] == "base":
		dbPart = parts[1]
	case len(parts) == 5 && parts[0] == "pg_tblspc":
		dbPart = parts[3]
	default:
		return false
	}
	oid, err := strconv.ParseUint(dbPart, 10, 32)
	if err != nil || !excluded[uint32(oid)] {
		return false
	}
	return relFileName.MatchString(path.Base(p))
}

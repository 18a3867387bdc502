// Package relmap is the map from a cluster's table names to the files
// that hold them, as a backup records it when it ends: which relfilenodes
// (the table's, its TOAST table's and TOAST index's, its indexes') in
// which database and tablespace. The browse mount shows each backup's
// tables by name with it.
package relmap

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Attachment is the name under which a snapshot stores its map.
const Attachment = "relations"

// Map is every connectable database's relations.
type Map struct {
	Databases []Database `json:"databases"`
}

// Database is one database and its relations with storage.
type Database struct {
	OID        uint32     `json:"oid"`
	Name       string     `json:"name"`
	Tablespace uint32     `json:"tablespace"` // the database's default (pg_database.dattablespace)
	Relations  []Relation `json:"relations"`
}

// Relation is a table, materialized view or sequence, and its files.
type Relation struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	Kind   string `json:"kind"` // pg_class.relkind
	Files  []File `json:"files"`
}

// File is one relfilenode of a relation: its own (Role ""), its TOAST
// table's ("toast"), its TOAST index's ("toast_index") or an index's
// ("index_<name>").
type File struct {
	Role       string `json:"role"`
	Tablespace uint32 `json:"tablespace"` // 0: the database's default
	Filenode   uint32 `json:"filenode"`
}

// The tablespaces every cluster has.
const (
	DefaultTablespace = 1663 // pg_default: base/<db>
	GlobalTablespace  = 1664 // pg_global: global/
)

// Decode reads an encoded map.
func Decode(data []byte) (*Map, error) {
	var m Map
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("relation map: %w", err)
	}
	return &m, nil
}

// Encode is the map's stored form.
func (m *Map) Encode() ([]byte, error) { return json.Marshal(m) }

// Dir is the folder of a data directory holding f's files: base/<db>,
// global, or pg_tblspc/<ts>/<version folder>/<db>, where versionDir names
// a tablespace's version folder (PG_15_202209061); ok is false when it
// does not know it.
func (d *Database) Dir(f File, versionDir func(ts uint32) (string, bool)) (string, bool) {
	ts := f.Tablespace
	if ts == 0 {
		ts = d.Tablespace
	}
	db := strconv.FormatUint(uint64(d.OID), 10)
	switch ts {
	case DefaultTablespace:
		return "base/" + db, true
	case GlobalTablespace:
		return "global", true
	}
	v, ok := versionDir(ts)
	if !ok {
		return "", false
	}
	return "pg_tblspc/" + strconv.FormatUint(uint64(ts), 10) + "/" + v + "/" + db, true
}

// relFile is <filenode>[_fork][.segment].
var relFile = regexp.MustCompile(`^([0-9]+)(?:_(fsm|vm|init))?(?:\.([0-9]+))?$`)

// EntryName is the name the browse mount gives file name (in f's folder)
// of f, or ok false when name is not one of f's files: the role and the
// fork, then the segment, so that the same table's files keep their names
// from one backup to the next whatever its relfilenodes (VACUUM FULL,
// CLUSTER and TRUNCATE change them): main, main.1, fsm, vm, init, toast,
// toast_fsm, index_orders_pkey, ...
func EntryName(f File, name string) (string, bool) {
	m := relFile.FindStringSubmatch(name)
	if m == nil || m[1] != strconv.FormatUint(uint64(f.Filenode), 10) {
		return "", false
	}
	fork := m[2]
	var out string
	switch {
	case f.Role == "" && fork == "":
		out = "main"
	case f.Role == "":
		out = fork
	case fork == "":
		out = f.Role
	default:
		out = f.Role + "_" + fork
	}
	if m[3] != "" {
		out += "." + m[3]
	}
	return out, true
}

// FolderName is a relation's folder name: schema.name, with "/" (which a
// file name cannot hold, and a quoted identifier can) as "%2F" and "%" as
// "%25".
func (r *Relation) FolderName() string {
	esc := strings.NewReplacer("%", "%25", "/", "%2F")
	return esc.Replace(r.Schema) + "." + esc.Replace(r.Name)
}

// DatabaseFolderName is a database's folder name, escaped as FolderName.
func (d *Database) FolderName() string {
	return strings.NewReplacer("%", "%25", "/", "%2F").Replace(d.Name)
}

// Connect opens a plain session to database db of the server ("": the
// one it connects to by default).
type Connect func(ctx context.Context, db string) (*pgconn.PgConn, error)

// Capture reads the map of every database that accepts connections.
func Capture(ctx context.Context, connect Connect) (*Map, error) {
	conn, err := connect(ctx, "")
	if err != nil {
		return nil, err
	}
	rows, err := query(ctx, conn, "SELECT oid::text, datname, dattablespace::text FROM pg_database WHERE datallowconn ORDER BY datname")
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	m := &Map{}
	for _, row := range rows {
		d := Database{Name: row[1]}
		oid, err1 := strconv.ParseUint(row[0], 10, 32)
		ts, err2 := strconv.ParseUint(row[2], 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("database %q: bad oid %q or tablespace %q", row[1], row[0], row[2])
		}
		d.OID, d.Tablespace = uint32(oid), uint32(ts)
		if d.Relations, err = captureDatabase(ctx, connect, d.Name); err != nil {
			return nil, err
		}
		m.Databases = append(m.Databases, d)
	}
	return m, nil
}

// relationsSQL lists every relation with storage (temporary ones aside)
// and, for an index or a TOAST table, the relation it belongs to.
const relationsSQL = `SELECT c.oid::text, n.nspname, c.relname, c.relkind::text, c.reltablespace::text,
	pg_relation_filenode(c.oid)::text,
	coalesce(i.indrelid, (SELECT o.oid FROM pg_class o WHERE o.reltoastrelid = c.oid LIMIT 1), 0)::text
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_index i ON i.indexrelid = c.oid
WHERE pg_relation_filenode(c.oid) IS NOT NULL AND c.relpersistence <> 't'`

func captureDatabase(ctx context.Context, connect Connect, db string) ([]Relation, error) {
	conn, err := connect(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("database %q: %w", db, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := query(ctx, conn, relationsSQL)
	if err != nil {
		return nil, fmt.Errorf("database %q: list relations: %w", db, err)
	}
	rels := map[string]relRow{}
	for _, r := range rows {
		ts, err1 := strconv.ParseUint(r[4], 10, 32)
		node, err2 := strconv.ParseUint(r[5], 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("database %q: relation %s: bad tablespace %q or filenode %q", db, r[2], r[4], r[5])
		}
		rels[r[0]] = relRow{schema: r[1], name: r[2], kind: r[3], tablespace: uint32(ts), node: uint32(node), owner: r[6]}
	}
	return assemble(rels), nil
}

func query(ctx context.Context, conn *pgconn.PgConn, sql string) ([][]string, error) {
	res := conn.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, res.Err
	}
	out := make([][]string, len(res.Rows))
	for i, row := range res.Rows {
		out[i] = make([]string, len(row))
		for j, v := range row {
			out[i][j] = string(v)
		}
	}
	return out, nil
}

// relRow is one row of relationsSQL, by relation OID.
type relRow struct {
	schema, name, kind string
	tablespace, node   uint32
	owner              string // "0": none
}

// assemble groups relations with their TOAST tables and indexes under
// the relation they belong to.
func assemble(rows map[string]relRow) []Relation {
	top := func(oid string) (string, []string) {
		var chain []string
		for range 4 { // index -> TOAST table -> table at most
			r := rows[oid]
			if r.owner == "0" || r.owner == "" {
				return oid, chain
			}
			if _, ok := rows[r.owner]; !ok {
				return oid, chain
			}
			chain = append(chain, oid)
			oid = r.owner
		}
		return oid, chain
	}
	byTop := map[string]*Relation{}
	for _, oid := range slices.Sorted(maps.Keys(rows)) {
		t, chain := top(oid)
		tr := rows[t]
		rel, ok := byTop[t]
		if !ok {
			rel = &Relation{Schema: tr.schema, Name: tr.name, Kind: tr.kind}
			byTop[t] = rel
		}
		r := rows[oid]
		f := File{Tablespace: r.tablespace, Filenode: r.node}
		switch {
		case len(chain) == 0:
			f.Role = ""
		case r.kind == "t":
			f.Role = "toast"
		case r.kind == "i" && rows[r.owner].kind == "t":
			f.Role = "toast_index"
		default:
			f.Role = "index_" + r.name
		}
		rel.Files = append(rel.Files, f)
	}
	var out []Relation
	for _, r := range byTop {
		slices.SortFunc(r.Files, func(a, b File) int { return strings.Compare(a.Role, b.Role) })
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b Relation) int {
		if c := strings.Compare(a.Schema, b.Schema); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

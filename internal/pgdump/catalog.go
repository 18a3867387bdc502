package pgdump

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ErrNoSuchTable is matched when a table is not in the database (at the
// backup's target); the message names what is nearby.
var ErrNoSuchTable = errors.New("no such table")

// notFoundError is an ErrNoSuchTable error; it says whether the table's
// schema exists, which makes that database's names the nearer ones.
type notFoundError struct {
	msg          string
	schemaExists bool
}

func (e *notFoundError) Error() string { return e.msg }
func (e *notFoundError) Unwrap() error { return ErrNoSuchTable }

// ErrAmbiguous is matched when no database was given and the tables are
// in more than one.
var ErrAmbiguous = errors.New("tables in several databases")

// relKinds are what pg_dump --table dumps: tables (plain, partitioned,
// foreign), views, materialized views and sequences.
const relKinds = "'r','p','f','v','m','S'"

// Databases lists the databases a client can connect to, in name order.
func Databases(ctx context.Context, conninfo string) ([]string, error) {
	conn, err := pgx.Connect(ctx, conninfo)
	if err != nil {
		return nil, fmt.Errorf("connect to the restored server: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname")
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Found is a table found in a database, with its size on disk.
type Found struct {
	Table
	Kind  string // r, p, f, v, m or S (pg_class.relkind)
	Bytes int64  // pg_total_relation_size: table, TOAST and indexes
}

// FindTables looks tables up in db. A missing one is an ErrNoSuchTable
// error naming the closest names in its schema (or the schemas there
// are, when its schema is missing too).
func FindTables(ctx context.Context, conninfo, db string, tables []Table) ([]Found, error) {
	conn, err := pgx.Connect(ctx, conninfoFor(conninfo, db))
	if err != nil {
		return nil, fmt.Errorf("connect to database %q of the restored server: %w", db, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var found []Found
	for _, t := range tables {
		f := Found{Table: t}
		err := conn.QueryRow(ctx, `SELECT c.relkind::text, pg_total_relation_size(c.oid)
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN (`+relKinds+`)`, t.Schema, t.Name).Scan(&f.Kind, &f.Bytes)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, notFound(ctx, conn, db, t)
		}
		if err != nil {
			return nil, fmt.Errorf("look up %s in database %q: %w", t, db, err)
		}
		found = append(found, f)
	}
	return found, nil
}

// notFound builds the ErrNoSuchTable error for t.
func notFound(ctx context.Context, conn *pgx.Conn, db string, t Table) error {
	var schemaExists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", t.Schema).Scan(&schemaExists); err != nil {
		return &notFoundError{msg: fmt.Sprintf("%v: %s in database %q", ErrNoSuchTable, t, db)}
	}
	if !schemaExists {
		rows, err := conn.Query(ctx, `SELECT nspname FROM pg_namespace
			WHERE nspname <> 'information_schema' AND nspname NOT LIKE 'pg\_%' ORDER BY nspname`)
		var schemas []string
		if err == nil {
			schemas, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil || len(schemas) == 0 {
			return &notFoundError{msg: fmt.Sprintf("%v: %s in database %q: there is no schema %s", ErrNoSuchTable, t, db, quoteIfNeeded(t.Schema))}
		}
		return &notFoundError{msg: fmt.Sprintf("%v: %s in database %q: there is no schema %s; its schemas are %s", ErrNoSuchTable, t, db, quoteIfNeeded(t.Schema), list(schemas, quoteIfNeeded))}
	}
	rows, err := conn.Query(ctx, `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind IN (`+relKinds+`)`, t.Schema)
	var names []string
	if err == nil {
		names, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil || len(names) == 0 {
		return &notFoundError{msg: fmt.Sprintf("%v: %s in database %q: schema %s has no tables", ErrNoSuchTable, t, db, quoteIfNeeded(t.Schema)), schemaExists: true}
	}
	near := Nearest(t.Name, names, 5)
	for i, n := range near {
		near[i] = Table{Schema: t.Schema, Name: n}.String()
	}
	return &notFoundError{msg: fmt.Sprintf("%v: %s in database %q; nearest in schema %s: %s", ErrNoSuchTable, t, db, quoteIfNeeded(t.Schema), strings.Join(near, ", ")), schemaExists: true}
}

func list(names []string, f func(string) string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = f(n)
	}
	return strings.Join(out, ", ")
}

// Nearest returns up to n of names, closest to name first (edit distance,
// case ignored; ties in name order).
func Nearest(name string, names []string, n int) []string {
	type scored struct {
		name string
		d    int
	}
	s := make([]scored, len(names))
	for i, c := range names {
		s[i] = scored{c, distance(strings.ToLower(name), strings.ToLower(c))}
	}
	slices.SortFunc(s, func(a, b scored) int {
		return cmp.Or(cmp.Compare(a.d, b.d), cmp.Compare(a.name, b.name))
	})
	out := make([]string, 0, n)
	for i := 0; i < len(s) && i < n; i++ {
		out = append(out, s[i].name)
	}
	return out
}

// distance is the Levenshtein distance between a and b (in bytes).
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			sub := prev[j-1]
			if a[i-1] != b[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// CountRows counts a table's rows (what was dumped, for the report).
func CountRows(ctx context.Context, conninfo, db string, t Table) (int64, error) {
	conn, err := pgx.Connect(ctx, conninfoFor(conninfo, db))
	if err != nil {
		return 0, fmt.Errorf("connect to database %q of the restored server: %w", db, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{t.Schema, t.Name}.Sanitize()).Scan(&n); err != nil {
		return 0, fmt.Errorf("count the rows of %s: %w", t, err)
	}
	return n, nil
}

// Locate finds the one database holding every table: the given one, or
// (db "") whichever database does. When none holds them all, the error
// is that of the first database that has the missing table's schema
// (else postgres's, else the first searched); several are ErrAmbiguous.
func Locate(ctx context.Context, conninfo, db string, tables []Table) (string, []Found, error) {
	if db != "" {
		found, err := FindTables(ctx, conninfo, db, tables)
		return db, found, err
	}
	dbs, err := Databases(ctx, conninfo)
	if err != nil {
		return "", nil, err
	}
	var holding []string
	var found []Found
	firstErr := error(nil)
	for _, d := range dbs {
		f, err := FindTables(ctx, conninfo, d, tables)
		switch {
		case err == nil:
			holding, found = append(holding, d), f
		case errors.Is(err, ErrNoSuchTable):
			// The names of a database that has the table's schema are the
			// nearer ones; else postgres's, else the first one's.
			var nf *notFoundError
			better := errors.As(err, &nf) && nf.schemaExists
			var cur *notFoundError
			curBetter := errors.As(firstErr, &cur) && cur.schemaExists
			if firstErr == nil || better && !curBetter || better == curBetter && d == "postgres" && !curBetter {
				firstErr = err
			}
		default:
			return "", nil, err
		}
	}
	switch {
	case len(holding) == 1:
		return holding[0], found, nil
	case len(holding) > 1:
		return "", nil, fmt.Errorf("%w: %s are in databases %s: say which with --db", ErrAmbiguous, list(names(tables), func(s string) string { return s }), strings.Join(holding, ", "))
	case firstErr != nil:
		return "", nil, fmt.Errorf("%w (searched databases %s; name one with --db)", firstErr, strings.Join(dbs, ", "))
	}
	return "", nil, fmt.Errorf("%w: the restored server has no database to search", ErrNoSuchTable)
}

func names(tables []Table) []string {
	out := make([]string, len(tables))
	for i, t := range tables {
		out[i] = t.String()
	}
	return out
}

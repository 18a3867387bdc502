// Package pgdump dumps tables, databases and globals out of a PostgreSQL
// server pgvault started on a backup: it names tables the way an operator
// types them, finds them (or what is nearby) in the server's catalogue,
// and runs pg_dump or pg_dumpall of a major that can read that server.
package pgdump

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// Table is a table's schema-qualified name, as stored in the catalogue
// (case and all).
type Table struct{ Schema, Name string }

// ErrBadTableName is matched by ParseTable's errors.
var ErrBadTableName = errors.New("bad table name")

// ParseTable reads SCHEMA.TABLE or TABLE (schema public) the way SQL
// does: an unquoted part is folded to lower case, a double-quoted one is
// taken as written ("" for a quote inside it), so "My Schema"."Orders"
// names what CREATE TABLE "My Schema"."Orders" made.
func ParseTable(s string) (Table, error) {
	var parts []string
	for rest := s; ; {
		part, tail, err := identifier(rest)
		if err != nil {
			return Table{}, fmt.Errorf("%w %q: %v", ErrBadTableName, s, err)
		}
		parts = append(parts, part)
		if tail == "" {
			break
		}
		if tail[0] != '.' {
			return Table{}, fmt.Errorf("%w %q: use SCHEMA.TABLE (double-quote a name holding dots or capitals)", ErrBadTableName, s)
		}
		rest = tail[1:]
	}
	switch len(parts) {
	case 1:
		return Table{Schema: "public", Name: parts[0]}, nil
	case 2:
		return Table{Schema: parts[0], Name: parts[1]}, nil
	}
	return Table{}, fmt.Errorf("%w %q: use SCHEMA.TABLE, without the database (that is --db)", ErrBadTableName, s)
}

// identifier reads one identifier at the start of s and returns the rest.
func identifier(s string) (string, string, error) {
	if s == "" {
		return "", "", errors.New("empty name")
	}
	if s[0] != '"' {
		end := strings.IndexAny(s, `."`)
		if end < 0 {
			end = len(s)
		}
		if end == 0 {
			return "", "", errors.New("empty name")
		}
		for _, c := range s[:end] {
			if !(c == '_' || c == '$' || unicode.IsLetter(c) || unicode.IsDigit(c)) {
				return "", "", fmt.Errorf("%q in a name: double-quote a name holding it", c)
			}
		}
		return strings.ToLower(s[:end]), s[end:], nil
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] != '"' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '"' {
			b.WriteByte('"')
			i++
			continue
		}
		if b.Len() == 0 {
			return "", "", errors.New(`"" is an empty name`)
		}
		return b.String(), s[i+1:], nil
	}
	return "", "", errors.New("a double quote is not closed")
}

// String is the name as SQL would write it: quoted only where needed.
func (t Table) String() string { return quoteIfNeeded(t.Schema) + "." + quoteIfNeeded(t.Name) }

// pattern is the name for pg_dump's --table: both parts double-quoted,
// which also makes its pattern characters (* ? .) literal.
func (t Table) pattern() string { return quote(t.Schema) + "." + quote(t.Name) }

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func quoteIfNeeded(s string) string {
	for i, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || i > 0 && (c >= '0' && c <= '9' || c == '$')) {
			return quote(s)
		}
	}
	if s == "" {
		return quote(s)
	}
	return s
}

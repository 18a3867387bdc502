package pgdump

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/pgvault/pgvault/internal/pg"
)

// Format is pg_dump's output format.
type Format string

// The formats pg_dump writes; plain is pg_dump's default.
const (
	Plain     Format = "plain"
	Custom    Format = "custom"
	Directory Format = "directory"
)

// ParseFormat reads a --format value ("" is plain).
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case "":
		return Plain, nil
	case Plain, Custom, Directory:
		return f, nil
	}
	return "", fmt.Errorf("--format %q: use plain, custom or directory", s)
}

// Options say what Dump writes.
type Options struct {
	// Conninfo reaches the server; DB is the database dumped.
	Conninfo, DB string
	// Tables, if any, are dumped alone (pg_dump --table, exactly these
	// names); none means the whole database.
	Tables     []Table
	Format     Format
	SchemaOnly bool
	DataOnly   bool
	// File is written by pg_dump itself (a directory for Directory);
	// "" sends the dump to Out.
	File string
	Out  io.Writer
}

// Dump runs pg_dump and returns the bytes it sent to Out (0 when it wrote
// File).
func Dump(ctx context.Context, prog Program, o Options) (int64, error) {
	args := []string{"--dbname=" + conninfoFor(o.Conninfo, o.DB), "--format=" + string(o.Format), "--no-password"}
	for _, t := range o.Tables {
		args = append(args, "--table="+t.pattern())
	}
	if len(o.Tables) > 0 {
		// A table that vanished between the check and the dump must fail
		// the dump, not leave it empty.
		args = append(args, "--strict-names")
	}
	if o.SchemaOnly {
		args = append(args, "--schema-only")
	}
	if o.DataOnly {
		args = append(args, "--data-only")
	}
	if o.File != "" {
		return run(ctx, prog, append(args, "--file="+o.File), nil)
	}
	return run(ctx, prog, args, o.Out)
}

// DumpGlobals runs pg_dumpall --globals-only: roles, their memberships
// and settings, and tablespaces.
func DumpGlobals(ctx context.Context, prog Program, conninfo, file string, out io.Writer) (int64, error) {
	args := []string{"--dbname=" + conninfo, "--globals-only", "--no-password"}
	if file != "" {
		return run(ctx, prog, append(args, "--file="+file), nil)
	}
	return run(ctx, prog, args, out)
}

// conninfoFor is conninfo with its database replaced (libpq and pgx take
// the last value of a repeated keyword).
func conninfoFor(conninfo, db string) string {
	return strings.TrimSpace(conninfo) + " dbname=" + pg.QuoteConnValue(db)
}

package main

import (
	"strings"
	"unsafe"

	"github.com/pgvault/pgvault/internal/redact"
)

// scrubArgs returns a copy of the command line and blanks, in the
// process's own argument memory, every secret redact.Spans finds in it
// (password and sslpassword values in any libpq spelling, URL passwords,
// secret URL parameters), so that
// /proc/<pid>/cmdline and ps no longer show them once pgvault runs (there
// is a short window before this runs; PGPASSWORD, ~/.pgpass or PGVAULT_PG
// have none). The Go runtime's os.Args strings share the kernel's argv
// memory (they are not copied), which is what makes this possible.
func scrubArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.Clone(a)
	}
	for _, a := range args {
		for _, span := range redact.Spans(a) {
			b := unsafe.Slice(unsafe.StringData(a), len(a))
			for k := span[0]; k < span[1]; k++ {
				b[k] = 'x'
			}
		}
	}
	return out
}

package main

import (
	"strings"
	"unsafe"
)

// scrubArgs returns a copy of the command line and blanks, in the
// process's own argument memory, the value of every password= keyword and
// every URL password (postgres://user:PASSWORD@host) in it, so that
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
		for _, span := range secretSpans(a) {
			b := unsafe.Slice(unsafe.StringData(a), len(a))
			for k := span[0]; k < span[1]; k++ {
				b[k] = 'x'
			}
		}
	}
	return out
}

// secretSpans finds the byte ranges of password values in one argument.
func secretSpans(a string) [][2]int {
	var spans [][2]int
	lower := strings.ToLower(a)
	for from := 0; ; {
		i := strings.Index(lower[from:], "password=")
		if i < 0 {
			break
		}
		start := from + i + len("password=")
		if start > 0 && from+i > 0 && isKeyChar(lower[from+i-1]) {
			from = start // e.g. "xpassword=": not the keyword
			continue
		}
		end := start
		if end < len(a) && a[end] == '\'' { // a quoted value
			end++
			for end < len(a) && a[end] != '\'' {
				if a[end] == '\\' {
					end++
				}
				end++
			}
			end = min(end+1, len(a))
		} else {
			for end < len(a) && a[end] != ' ' && a[end] != '\t' && a[end] != '&' {
				end++
			}
		}
		spans = append(spans, [2]int{start, end})
		from = end
	}
	// URL form: scheme://user:password@host
	if i := strings.Index(a, "://"); i >= 0 {
		rest := a[i+3:]
		if at := strings.IndexByte(rest, '@'); at >= 0 {
			if slash := strings.IndexAny(rest, "/?#"); slash < 0 || at < slash {
				if colon := strings.IndexByte(rest[:at], ':'); colon >= 0 {
					spans = append(spans, [2]int{i + 3 + colon + 1, i + 3 + at})
				}
			}
		}
	}
	return spans
}

func isKeyChar(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
}

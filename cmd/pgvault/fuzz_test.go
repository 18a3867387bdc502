package main

import (
	"testing"
)

// FuzzParseByteSize parses sizes given on the command line (--cache-size,
// --hydrate-rate): never a panic, never a negative size.
func FuzzParseByteSize(f *testing.F) {
	for _, s := range []string{"512MiB", "1G", "64k", "12345", "1.5GiB", "", "-1", "NaN", "Inf", "1e300TiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseByteSize(s)
		if err == nil && n < 0 {
			t.Fatalf("parseByteSize(%q) = %d", s, n)
		}
	})
}

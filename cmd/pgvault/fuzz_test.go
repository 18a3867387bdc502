package main

import (
	"strings"
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

// FuzzRedact checks that redact removes the value of every password=
// keyword from a message that echoes a conninfo or a URL.
func FuzzRedact(f *testing.F) {
	f.Add("host=h port=5432 user=u password=hunter2hunter2 dbname=x", "hunter2hunter2")
	f.Add("cannot parse `postgres://alice:hunter2hunter2@db/x`: bad port", "hunter2hunter2")
	f.Add("PASSWORD=hunter2hunter2", "hunter2hunter2")
	f.Fuzz(func(t *testing.T, prefix, secret string) {
		if len(secret) < 8 || strings.ContainsAny(secret, " \t\n\r\v\f=@:/'\\\"") || strings.ContainsAny(prefix, "=@:/") || strings.Contains(prefix, secret) {
			return
		}
		for _, msg := range []string{
			prefix + " password=" + secret + " host=x",
			prefix + " postgres://u:" + secret + "@host/db",
		} {
			if got := redact(msg); strings.Contains(got, secret) {
				t.Fatalf("redact(%q) = %q: the password is still there", msg, got)
			}
		}
	})
}

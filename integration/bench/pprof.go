package bench

import (
	"sort"
	"strconv"
	"strings"
)

// profileParts classify a function of a Go CPU profile by its name; the
// first matching prefix wins.
var profileParts = []struct{ name, prefixes string }{
	{"kernel: system calls (file, socket and FUSE I/O)", "syscall. internal/runtime/syscall runtime/internal/syscall golang.org/x/sys/unix internal/poll."},
	{"memory copies (memmove, memclr)", "runtime.memmove runtime.memclr"},
	{"Go runtime (GC, scheduler, allocation)", "runtime. internal/runtime"},
	{"zstd (klauspost/compress)", "github.com/klauspost/compress"},
	{"key derivation (argon2id, once per command that opens the repository)", "golang.org/x/crypto/argon2"},
	{"encryption and hashing (AES-GCM, HMAC-SHA-256)", "crypto/ golang.org/x/crypto vendor/golang.org/x/crypto"},
	{"PostgreSQL protocol (pgx, pglogrepl)", "github.com/jackc"},
	{"FUSE (go-fuse)", "github.com/hanwen"},
	{"pgvault's own code", "github.com/pgvault"},
}

// CategorizeTop sums the flat% column of `go tool pprof -top` output by
// part (kernel, runtime, zstd, crypto, pgvault, ...), largest first.
func CategorizeTop(top string) []Category {
	sums := map[string]float64{}
	for _, line := range strings.Split(top, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasSuffix(f[1], "%") {
			continue
		}
		p, err := strconv.ParseFloat(strings.TrimSuffix(f[1], "%"), 64)
		if err != nil {
			continue
		}
		fn := strings.Join(f[5:], " ")
		part := "other"
		for _, c := range profileParts {
			if hasAnyPrefix(fn, strings.Fields(c.prefixes)) {
				part = c.name
				break
			}
		}
		sums[part] += p
	}
	var out []Category
	for name, p := range sums {
		if p >= 0.5 {
			out = append(out, Category{Name: name, Percent: p})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Percent > out[j].Percent })
	return out
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

package wal_test

import (
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/internal/pg/wal"
)

// Fuzz targets for the parsers of configuration values: recovery targets
// given on the command line (and written into postgresql.auto.conf), WAL
// archive file names of every kind, and server memory settings.

func FuzzParseFileName(f *testing.F) {
	for _, s := range []string{
		"000000010000000000000003", "000000010000000000000003.partial", "00000002.history",
		"000000010000000000000002.00000028.backup", "000000010000000000000008.00100000.backup", "", "x.history",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		const segSize = 16 << 20
		fn, err := wal.ParseFileName(name, segSize)
		if err != nil {
			// Classify checks the form only; ParseFileName also refuses a
			// segment part out of range for the segment size.
			if !errors.Is(err, wal.ErrInvalidName) {
				t.Fatalf("ParseFileName(%q): %v does not match ErrInvalidName", name, err)
			}
			return
		}
		if fn.Kind != wal.Classify(name) || fn.Kind == wal.KindInvalid {
			t.Fatalf("ParseFileName(%q) kind %v, Classify %v", name, fn.Kind, wal.Classify(name))
		}
		if fn.Timeline == 0 {
			t.Fatalf("ParseFileName(%q): timeline 0", name)
		}
		if fn.Kind == wal.KindSegment {
			if got := fn.Segment().Name(segSize); got != name {
				t.Fatalf("ParseFileName(%q).Segment().Name() = %q", name, got)
			}
		}
	})
}

func FuzzParseTargets(f *testing.F) {
	for _, s := range []string{
		"2026-01-02T03:04:05.123Z", "2026-01-02 03:04:05.123456+00", "2026-01-02 03:04:05+05:30", "2026-01-02 03:04:05+0530",
		"2026-01-02", "16/B374D848", "0/0", "12345", "4294967296", "pause", "promote", "shutdown", "latest", "current", "3", "0",
		"", "FFFFFFFF/FFFFFFFF", "-1", "2026-13-40",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if tm, err := wal.ParseTargetTime(s, time.UTC); err == nil {
			if tm.Nanosecond()%1000 != 0 {
				t.Fatalf("ParseTargetTime(%q) = %v: finer than a microsecond", s, tm)
			}
			tg := wal.TimeTarget(tm)
			if v := tg.Value(); v != "" {
				back, err := wal.ParseTargetTime(v, time.UTC)
				if err != nil || !back.Equal(tm) {
					t.Fatalf("time target %q written as %q reads back as %v, %v", s, v, back, err)
				}
			}
		}
		if lsn, err := wal.ParseTargetLSN(s); err == nil {
			back, err := wal.ParseTargetLSN(wal.LSNTarget(lsn).Value())
			if err != nil || back != lsn {
				t.Fatalf("LSN target %q does not round-trip: %v %v", s, back, err)
			}
		}
		if x, err := wal.ParseTargetXID(s); err == nil {
			if err := wal.XIDTarget(x).Validate(); err == nil {
				back, err := wal.ParseTargetXID(wal.XIDTarget(x).Value())
				if err != nil || back != x {
					t.Fatalf("XID target %q does not round-trip", s)
				}
			}
		}
		if a, err := wal.ParseTargetAction(s); err == nil && a.Describe() == "" {
			t.Fatalf("ParseTargetAction(%q) = %v, which has no description", s, a)
		}
		if g, err := wal.ParseTimelineGoal(s); err == nil {
			back, err := wal.ParseTimelineGoal(g.String())
			if err != nil || back != g {
				t.Fatalf("timeline goal %q does not round-trip through %q", s, g)
			}
		}
		// A target name goes into postgresql.auto.conf quoted: whatever it
		// holds (but NUL, which no argument can hold), the setting is one
		// line that PostgreSQL's reader turns back into the name.
		if !strings.Contains(s, "\x00") {
			line := wal.Setting{Name: "recovery_target_name", Value: s}.String()
			if strings.ContainsAny(line, "\n\r") {
				t.Fatalf("name %q makes a multi-line setting %q", s, line)
			}
			q := wal.QuoteConfString(s)
			if got, ok := gucScanStr(q); !ok || got != s {
				t.Fatalf("QuoteConfString(%q) = %s reads back as %q (ok %v)", s, q, got, ok)
			}
		}
	})
}

func FuzzParseMemorySize(f *testing.F) {
	for _, s := range []string{"16MB", "1GB", "8192kB", "16777216", "1TB", "0B", "", "MB", "18446744073709551615TB", "-1MB", "17179869184GB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := wal.ParseMemorySize(s)
		if err != nil {
			return
		}
		// The value must be what the text says, never a wrapped product.
		num, shift := s, uint(0)
		for _, u := range []struct {
			suffix string
			shift  uint
		}{{"TB", 40}, {"GB", 30}, {"MB", 20}, {"kB", 10}, {"B", 0}} {
			if rest, ok := strings.CutSuffix(s, u.suffix); ok {
				num, shift = rest, u.shift
				break
			}
		}
		want, ok := new(big.Int).SetString(num, 10)
		if !ok {
			t.Fatalf("ParseMemorySize(%q) = %d, but %q is no number", s, n, num)
		}
		want.Lsh(want, shift)
		if !want.IsUint64() || want.Uint64() != n {
			t.Fatalf("ParseMemorySize(%q) = %d, want %s", s, n, want)
		}
	})
}

// gucScanStr reads a quoted configuration string as PostgreSQL's
// GUC_scanstr does: ” is a quote, backslash escapes b f n r t, octal
// digits and any other byte (itself). It reports false for a string that
// is not one quoted token.
func gucScanStr(q string) (string, bool) {
	if len(q) < 2 || q[0] != '\'' || q[len(q)-1] != '\'' {
		return "", false
	}
	in := q[1 : len(q)-1]
	var b strings.Builder
	for i := 0; i < len(in); i++ {
		c := in[i]
		switch {
		case c == '\'':
			if i+1 >= len(in) || in[i+1] != '\'' {
				return "", false // a lone quote would end the token
			}
			b.WriteByte('\'')
			i++
		case c == '\\' && i+1 < len(in):
			i++
			switch e := in[i]; e {
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case '0', '1', '2', '3', '4', '5', '6', '7':
				v := int(e - '0')
				for k := 0; k < 2 && i+1 < len(in) && in[i+1] >= '0' && in[i+1] <= '7'; k++ {
					i++
					v = v*8 + int(in[i]-'0')
				}
				b.WriteByte(byte(v))
			default:
				b.WriteByte(e)
			}
		case c == '\n' || c == '\r':
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

package pgdump

import (
	"errors"
	"slices"
	"testing"
)

func TestParseTable(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    Table
		str     string // String()
		pattern string
	}{
		{"accounts", Table{"public", "accounts"}, "public.accounts", `"public"."accounts"`},
		{"app.Orders", Table{"app", "orders"}, "app.orders", `"app"."orders"`},
		{`"App"."Orders"`, Table{"App", "Orders"}, `"App"."Orders"`, `"App"."Orders"`},
		{`app."odd.name"`, Table{"app", "odd.name"}, `app."odd.name"`, `"app"."odd.name"`},
		{`"say ""hi"""`, Table{"public", `say "hi"`}, `public."say ""hi"""`, `"public"."say ""hi"""`},
		{`s."a*b?"`, Table{"s", "a*b?"}, `s."a*b?"`, `"s"."a*b?"`},
		{"t1$x", Table{"public", "t1$x"}, "public.t1$x", `"public"."t1$x"`},
		{`"1st"`, Table{"public", "1st"}, `public."1st"`, `"public"."1st"`},
	} {
		got, err := ParseTable(tt.in)
		if err != nil {
			t.Errorf("ParseTable(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseTable(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if s := got.String(); s != tt.str {
			t.Errorf("ParseTable(%q).String() = %s, want %s", tt.in, s, tt.str)
		}
		if p := got.pattern(); p != tt.pattern {
			t.Errorf("ParseTable(%q).pattern() = %s, want %s", tt.in, p, tt.pattern)
		}
		// What String prints reads back as the same table.
		if again, err := ParseTable(got.String()); err != nil || again != got {
			t.Errorf("ParseTable(%q) does not read back: %+v, %v", got.String(), again, err)
		}
	}
	for _, bad := range []string{"", ".", "a.", ".b", "db.s.t", `"open`, `""`, `a"b"`, "a b", " a", `"a"b`, "my-table", "a;drop"} {
		if got, err := ParseTable(bad); !errors.Is(err, ErrBadTableName) {
			t.Errorf("ParseTable(%q) = %+v, %v; want ErrBadTableName", bad, got, err)
		}
	}
}

func TestParseMajor(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"pg_dump (PostgreSQL) 15.10 (Debian 15.10-0+deb12u1)\n", 15, true},
		{"pg_dump (PostgreSQL) 18.1\n", 18, true},
		{"pg_dumpall (PostgreSQL) 16beta2\n", 16, true},
		{"pg_dump (PostgreSQL) 9.6.24\n", 9, true},
		{"mysqldump  Ver 10.19\n", 0, false},
		{"pg_dump (PostgreSQL) x\n", 0, false},
	} {
		got, ok := parseMajor(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseMajor(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestNearest(t *testing.T) {
	names := []string{"pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history", "orders", "order_lines"}
	for _, tt := range []struct {
		name string
		n    int
		want []string
	}{
		{"pgbench_acounts", 2, []string{"pgbench_accounts", "pgbench_tellers"}},
		{"Orders", 1, []string{"orders"}},
		{"order", 2, []string{"orders", "order_lines"}},
		{"x", 10, []string{"orders", "order_lines", "pgbench_history", "pgbench_tellers", "pgbench_accounts", "pgbench_branches"}},
	} {
		if got := Nearest(tt.name, names, tt.n); !slices.Equal(got, tt.want) {
			t.Errorf("Nearest(%q, %d) = %v, want %v", tt.name, tt.n, got, tt.want)
		}
	}
}

func TestDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "", 3}, {"", "ab", 2}, {"kitten", "sitting", 3}, {"flaw", "lawn", 2}, {"same", "same", 0},
	} {
		if got := distance(tt.a, tt.b); got != tt.want {
			t.Errorf("distance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{"": Plain, "plain": Plain, "custom": Custom, "directory": Directory} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseFormat("tar"); err == nil {
		t.Error("ParseFormat(tar) succeeded")
	}
}

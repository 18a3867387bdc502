package redact

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// Every spelling of a password that libpq (and pgconn) accept. Each case
// is checked against pgconn: it must parse to the secret, and the redacted
// string must still parse, to no password or another one.
var conninfos = []struct {
	name, conninfo, secret string
}{
	{"plain", "host=db1 user=backup password=s3cret", "s3cret"},
	{"first", "password=s3cret host=db1", "s3cret"},
	{"blanks around =", "host=db1 password = s3cret user=u", "s3cret"},
	{"blank before =", "host=db1 password =s3cret", "s3cret"},
	{"blank after =", "host=db1 password= s3cret", "s3cret"},
	{"tabs and newlines", "host=db1\tpassword\t=\n s3cret\nuser=u", "s3cret"},
	{"quoted", "host=db1 password='s3cret'", "s3cret"},
	{"quoted two words", "host=db1 password='two words' user=u", "two words"},
	{"quoted with blanks around =", "host=db1 password = 'two words'", "two words"},
	{"quoted escaped quote", `host=db1 password='it\'s' user=u`, "it's"},
	{"quoted escaped backslash", `host=db1 password='a\\b' user=u`, `a\b`},
	{"unquoted escaped blank", `host=db1 password=two\ words user=u`, "two words"},
	{"unquoted with =", "host=db1 password=a=b=c", "a=b=c"},
	{"unquoted with &", "host=db1 password=a&b user=u", "a&b"},
	{"unquoted with quote inside", "host=db1 password=ab'cd user=u", "ab'cd"},
	{"last wins", "password=first host=db1 password=second", "second"},
	{"sslpassword too", "host=db1 sslpassword=keypass password=s3cret", "s3cret"},
	{"url userinfo", "postgres://backup:s3cret@db1:5432/postgres", "s3cret"},
	{"postgresql scheme", "postgresql://backup:s3cret@db1/postgres?sslmode=disable", "s3cret"},
	{"url percent-encoded", "postgres://backup:s%40cr%20t@db1/postgres", "s@cr t"},
	{"url query", "postgres://backup@db1/postgres?password=s3cret&sslmode=disable", "s3cret"},
	{"url query last", "postgres://db1/postgres?sslmode=disable&password=s3cret", "s3cret"},
	{"url multi-host", "postgres://backup:s3cret@db1:5432,db2:5433/postgres", "s3cret"},
}

func TestConninfoSpellings(t *testing.T) {
	for _, c := range conninfos {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := pgconn.ParseConfig(c.conninfo)
			if err != nil {
				t.Fatalf("pgconn does not accept %q: %v", c.conninfo, err)
			}
			if cfg.Password != c.secret {
				t.Fatalf("pgconn parses password %q from %q, the table says %q", cfg.Password, c.conninfo, c.secret)
			}
			if !HasPassword(c.conninfo) {
				t.Errorf("HasPassword(%q) = false", c.conninfo)
			}
			got := Conninfo(c.conninfo)
			if got == Hidden {
				t.Fatalf("Conninfo(%q) hid everything; the scanner missed the password", c.conninfo)
			}
			for _, part := range append(strings.Fields(c.secret), c.secret) {
				if len(part) >= 4 && strings.Contains(got, part) {
					t.Errorf("Conninfo(%q) = %q: %q is still there", c.conninfo, got, part)
				}
			}
			if cfg2, err := pgconn.ParseConfig(got); err == nil && cfg2.Password == c.secret {
				t.Errorf("Conninfo(%q) = %q still parses to the password", c.conninfo, got)
			}
			if !strings.Contains(got, "db1") {
				t.Errorf("Conninfo(%q) = %q lost the host", c.conninfo, got)
			}
			// The same string inside an error message.
			msg := "cannot parse `" + c.conninfo + "`: failed"
			if m := Message(msg, c.conninfo); strings.Contains(m, c.secret) {
				t.Errorf("Message(%q) = %q", msg, m)
			}
		})
	}
}

func TestNoPassword(t *testing.T) {
	for _, s := range []string{
		"host=db1 user=backup", "", "postgres://backup@db1/postgres", "host=db1 password=",
		"host=db1 password=''", "postgres://db1/postgres?sslmode=require", "host=/tmp/sock user=password",
		"application_name=mypassword host=x",
	} {
		if HasPassword(s) {
			t.Errorf("HasPassword(%q) = true", s)
		}
		if got := Conninfo(s); got != s && !strings.Contains(s, "password=") {
			t.Errorf("Conninfo(%q) = %q, want it unchanged", s, got)
		}
	}
}

// HasPassword must not count a password from the environment: the agent
// asks it whether the configuration file itself holds a secret.
func TestHasPasswordIgnoresEnvironment(t *testing.T) {
	t.Setenv("PGPASSWORD", "fromenv")
	if HasPassword("host=db1 user=backup") {
		t.Error("PGPASSWORD counted as a password in the string")
	}
	if !HasPassword("host=db1 password = s") {
		t.Error("missed `password = s`")
	}
}

func TestText(t *testing.T) {
	cases := []struct{ in, want string }{
		{"nothing secret here", "nothing secret here"},
		{"password: none", "password: none"},
		{"xpassword=keep", "xpassword=keep"},
		{"--pg=host=a password=s user=u", "--pg=host=a password=xxxxx user=u"},
		{"unterminated password='abc def", "unterminated password=xxxxx"},
		{"sftp://u:pw@host:22/path and s3://b/p?secret_key=abc&region=x", "sftp://u:xxxxx@host:22/path and s3://b/p?secret_key=xxxxx&region=x"},
		{"PASSWORD=upper", "PASSWORD=xxxxx"},
		{"password==weird", "password=xxxxx"},
	}
	for _, c := range cases {
		if got := Text(c.in); got != c.want {
			t.Errorf("Text(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"/var/lib/pgvault/repo", "/var/lib/pgvault/repo"},
		{"file:///var/lib/pgvault/repo", "file:///var/lib/pgvault/repo"},
		{"s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1", "s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1"},
		{"sftp://backup:pw@host:22/srv/repo", "sftp://backup:xxxxx@host:22/srv/repo"},
		{"azure://c/p?sig=abc123&sv=2022", "azure://c/p?sig=xxxxx&sv=2022"},
		{"s3://b/p?secret_key=abc", "s3://b/p?secret_key=xxxxx"},
		{"sftp://u:p%zz@host/x", "sftp://u:xxxxx@host/x"}, // unparsable: scanned as text
	}
	for _, c := range cases {
		if got := URL(c.in); got != c.want {
			t.Errorf("URL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func FuzzConninfo(f *testing.F) {
	for _, c := range conninfos {
		f.Add(c.conninfo)
	}
	f.Add("password='unterminated")
	f.Add(`password=\`)
	f.Fuzz(func(t *testing.T, s string) {
		got := Conninfo(s)
		pw := passwordIn(s)
		if pw != "" && got != Hidden && passwordIn(got) == pw {
			t.Fatalf("Conninfo(%q) = %q still parses to the password %q", s, got, pw)
		}
		for _, sp := range Spans(s) {
			if sp[0] < 0 || sp[1] > len(s) || sp[0] >= sp[1] {
				t.Fatalf("Spans(%q): bad span %v", s, sp)
			}
		}
		if pw != "" && !HasPassword(s) {
			t.Fatalf("HasPassword(%q) = false, pgconn finds %q", s, pw)
		}
	})
}

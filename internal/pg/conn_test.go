package pg

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestMajor(t *testing.T) {
	for in, want := range map[string]int{"15.10 (Debian 15.10-0+deb12u1)": 15, "9.6.3": 9, "17beta1": 17, "18.4": 18, "": 0, "x": 0} {
		if got := Major(in); got != want {
			t.Errorf("Major(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestKindOf(t *testing.T) {
	pgErr := func(code, msg string) error {
		return fmt.Errorf("connect: %w", &pgconn.PgError{Code: code, Message: msg})
	}
	tests := []struct {
		name string
		err  error
		want Kind
	}{
		{"wrong password", pgErr("28P01", "password authentication failed"), Authentication},
		{"unknown role", pgErr("28000", `role "x" does not exist`), Authentication},
		{"pg_hba", pgErr("28000", "no pg_hba.conf entry for replication connection"), Configuration},
		{"no REPLICATION", pgErr("42501", "must be superuser or replication role"), Configuration},
		{"wal_level", pgErr("55000", "wal_level must be set to \"replica\""), Configuration},
		{"no WAL sender", pgErr("53300", "exceeds max_wal_senders (currently 1)"), Configuration},
		{"too many clients", pgErr("53300", "sorry, too many clients already"), Transient},
		{"refused", syscall.ECONNREFUSED, Transient},
	}
	for _, tc := range tests {
		if got := KindOf(tc.err); got != tc.want {
			t.Errorf("%s: KindOf = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Explain says what to change, never echoes the password, and keeps the
// cause for errors.As.
func TestExplain(t *testing.T) {
	cfg, err := ParseConfig("host=db1 port=5433 user=backup password=hunter2-secret")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		err  error
		want string
	}{
		{&pgconn.PgError{Code: "28P01", Message: "password authentication failed"}, "rejected the password"},
		{&pgconn.PgError{Code: "28000", Message: "no pg_hba.conf entry for replication connection"}, "host replication backup"},
		{&pgconn.PgError{Code: "42501", Message: "must be superuser or replication role"}, `ALTER ROLE "backup" REPLICATION`},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), "connection refused"},
		{errors.New("weird failure quoting password=hunter2-secret"), "PostgreSQL at db1 port 5433"},
	}
	for _, tc := range tests {
		got := Explain(tc.err, cfg)
		if !strings.Contains(got.Error(), tc.want) || strings.Contains(got.Error(), "hunter2") {
			t.Errorf("Explain(%v) = %q, want it to say %q and hide the password", tc.err, got, tc.want)
		}
		if !errors.Is(got, tc.err) {
			t.Errorf("Explain(%v) lost its cause", tc.err)
		}
		if again := Explain(got, cfg); again != got {
			t.Errorf("explaining twice changed the error: %q", again)
		}
	}
}

func TestParseConfigHidesPassword(t *testing.T) {
	for _, s := range []string{"host=db password = 'hunter2 secret' port=notanumber", "postgres://u:hunter2@db:x/"} {
		_, err := ParseConfig(s)
		if !errors.Is(err, ErrBadConninfo) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ParseConfig(%q) = %v", s, err)
		}
	}
}

func TestCheckMajor(t *testing.T) {
	cases := []struct {
		version string
		oldest  int
		err     string
	}{
		{"15.10 (Debian 15.10-0+deb12u1)", 15, ""},
		{"18.4", 15, ""},
		{"13.2", 13, ""},
		{"14.9", 15, "too old"},
		{"19beta1", 13, "newer than this pgvault knows (13 to 18)"},
		{"19.0", 15, "upgrade pgvault"},
		{"", 13, "cannot read"},
	}
	for _, c := range cases {
		err := CheckMajor(c.version, c.oldest, "base backups")
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrUnsupportedServer)) {
			t.Errorf("CheckMajor(%q, %d) = %v, want %q", c.version, c.oldest, err, c.err)
		}
	}
	if ok, msg := Supported("19.1"); ok || !strings.Contains(msg, "newer than") {
		t.Errorf("Supported(19.1) = %v, %q", ok, msg)
	}
	if ok, msg := Supported("14.1"); !ok || !strings.Contains(msg, "base backups need 15") {
		t.Errorf("Supported(14.1) = %v, %q", ok, msg)
	}
}

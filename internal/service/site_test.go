package service

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/repo"
)

func TestReadPassword(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	os.WriteFile(file, []byte("from-file\nignored\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	cases := []struct {
		name       string
		src        PasswordSource
		secret     string
		from, file string
		missing    bool
		err        string
	}{
		{name: "environment wins", src: PasswordSource{Env: "from-env", File: file}, secret: "from-env", from: PasswordEnv, file: file},
		{name: "file", src: PasswordSource{File: file}, secret: "from-file", from: file, file: file},
		{name: "nothing", src: PasswordSource{}, missing: true},
		{name: "empty file", src: PasswordSource{File: empty}, file: empty, missing: true, err: "is empty"},
		{name: "missing file", src: PasswordSource{File: filepath.Join(dir, "nope")}, file: filepath.Join(dir, "nope"), missing: true, err: "no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pw, err := ReadPassword(c.src)
			if err != nil {
				t.Fatal(err)
			}
			if string(pw.Secret) != c.secret || pw.From != c.from || pw.File != c.file || (pw.Missing != nil) != c.missing {
				t.Fatalf("got %+v", pw)
			}
			switch {
			case c.err != "" && (errors.Is(pw.Missing, repo.ErrNoPassword) || !strings.Contains(pw.Missing.Error(), c.err)):
				t.Fatalf("Missing = %v, want %q", pw.Missing, c.err)
			case c.err == "" && c.missing && !errors.Is(pw.Missing, repo.ErrNoPassword):
				t.Fatalf("Missing = %v", pw.Missing)
			}
		})
	}
}

// A site without a password opening an encrypted repository fails with
// the caller's hint, still matching repo.ErrNoPassword.
func TestOpenWithoutPasswordGivesTheHint(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	const secret = "hunter2-secret"
	s := &Site{Repo: dir, CacheDir: t.TempDir(), Password: Password{Secret: []byte(secret)}}
	if _, err := s.Init(ctx, InitOptions{KDF: repo.KDFParams{Time: 1, Memory: 64, Threads: 1}}); err != nil {
		t.Fatal(err)
	}
	hint := errors.New("set sites.x.password_file")
	s.Password = Password{Missing: hint}
	if _, err := s.Open(ctx, Access{}); !errors.Is(err, hint) {
		t.Fatalf("err = %v, want the hint", err)
	}
	s.Password = Password{Secret: []byte(secret)}
	r, err := s.Open(ctx, Access{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	// restore_command names the password's file, never the password.
	cases := []struct {
		name string
		pw   Password
		want string
		err  string
	}{
		{name: "env only", pw: Password{Secret: []byte(secret), From: PasswordEnv}, err: "only came from PGVAULT_PASSWORD"},
		{name: "file", pw: filePassword(t, secret), want: "--password-file"},
		{name: "env and a file that differs", pw: envAndFile(t, secret, "other"), err: "does not hold the password"},
		{name: "env and the same file", pw: envAndFile(t, secret, secret), want: "--password-file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			site := &Site{Repo: dir, Password: c.pw}
			cmd, err := site.RestoreCommand(r, "/usr/bin/pgvault")
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || !strings.Contains(cmd, c.want) || strings.Contains(cmd, secret) {
				t.Fatalf("restore_command %q, %v", cmd, err)
			}
		})
	}
	site := &Site{Repo: "sftp://u:secret@host/repo", Password: filePassword(t, secret)}
	if _, err := site.RestoreCommand(r, "/usr/bin/pgvault"); !errors.Is(err, ErrBadRepoURL) || strings.Contains(err.Error(), "secret") {
		t.Fatalf("URL with a password: %v", err)
	}
}

func filePassword(t *testing.T, secret string) Password {
	f := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(f, []byte(secret+"\n"), 0o600)
	return Password{Secret: []byte(secret), From: f, File: f}
}

func envAndFile(t *testing.T, env, file string) Password {
	pw := filePassword(t, file)
	pw.Secret, pw.From = []byte(env), PasswordEnv
	return pw
}

func TestAbsIfPath(t *testing.T) {
	wd, _ := os.Getwd()
	for in, want := range map[string]string{
		"":                     "",
		"/abs/repo":            "/abs/repo",
		"s3://bucket/p":        "s3://bucket/p",
		"rel/repo":             filepath.Join(wd, "rel/repo"),
		"weird:name/not-a-url": filepath.Join(wd, "weird:name/not-a-url"),
	} {
		if got := AbsIfPath(in); got != want {
			t.Errorf("AbsIfPath(%q) = %q, want %q", in, got, want)
		}
	}
}

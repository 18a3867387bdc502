package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/file"
)

// pgv runs pgvault in-process and returns its exit code, stdout and stderr.
func pgv(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"pgvault"}, args...), strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// newRepo inits a file repository with a password file and returns the
// global arguments that reach it.
func newRepo(t *testing.T) (dir string, args []string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "repo")
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte("s3cret\n"), 0o600)
	args = []string{"--repo", dir, "--password-file", pwFile, "--cache-dir", t.TempDir()}
	t.Setenv("PGVAULT_PASSWORD", "")
	code, _, stderr := pgv(t, nil, append(args, "repo", "init")...)
	if code != 0 {
		t.Fatalf("repo init: exit %d: %s", code, stderr)
	}
	return dir, args
}

// storeSample puts one snapshot with a few files into the repository.
func storeSample(t *testing.T, dir string) {
	t.Helper()
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "base", "1"), 0o700)
	os.WriteFile(filepath.Join(src, "base", "1", "16384"), chunk.TestPages(64, 1), 0o600)
	os.WriteFile(filepath.Join(src, "PG_VERSION"), []byte("15\n"), 0o600)
	be, _ := file.New(dir)
	r, err := repo.Open(context.Background(), be, []byte("s3cret"), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := backup.SaveDirectory(context.Background(), r, src, backup.DirOptions{}); err != nil {
		t.Fatal(err)
	}
}

func oneLineErr(t *testing.T, stderr string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) != 1 {
		t.Fatalf("stderr is %d lines, want one:\n%s", len(lines), stderr)
	}
	return lines[0]
}

func TestInitCheckStats(t *testing.T) {
	dir, args := newRepo(t)
	storeSample(t, dir)
	code, out, stderr := pgv(t, nil, append(args, "--output", "json", "repo", "check", "--read-data")...)
	if code != 0 {
		t.Fatalf("check: exit %d: %s %s", code, out, stderr)
	}
	var rep struct {
		OK        bool
		Snapshots int
		PacksRead int `json:"packs_read"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.OK || rep.Snapshots != 1 || rep.PacksRead == 0 {
		t.Fatalf("check json = %s (%v)", out, err)
	}
	code, out, _ = pgv(t, nil, append(args, "--output", "json", "repo", "stats")...)
	var st repo.Stats
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Snapshots != 1 || st.StoredBytes == 0 || st.DedupRatio < 1 {
		t.Fatalf("stats: exit %d: %s", code, out)
	}
	code, out, _ = pgv(t, nil, append(args, "repo", "stats")...)
	if code != 0 || !strings.Contains(out, "dedup ratio:") {
		t.Fatalf("stats text: %d %s", code, out)
	}
}

func TestBadInput(t *testing.T) {
	dir, args := newRepo(t)
	wrongPw := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrongPw, []byte("nope\n"), 0o600)

	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantCode int
		wantMsg  string
	}{
		{"wrong password", []string{"--repo", dir, "--password-file", wrongPw, "repo", "check"}, nil,
			1, "wrong password or not a pgvault repository"},
		{"init twice", append(args, "repo", "init"), nil, 1, "a repository already exists there"},
		{"unknown scheme", []string{"--repo", "ftp://host/x", "repo", "check"}, nil, 2, `unknown repository URL scheme "ftp"`},
		{"no repo", []string{"repo", "check"}, map[string]string{"PGVAULT_REPO": ""}, 2, "no repository given"},
		{"not a repository", []string{"--repo", t.TempDir(), "--password-file", wrongPw, "repo", "check"}, nil,
			1, "not a pgvault repository"},
		{"no password", []string{"--repo", dir, "repo", "check"}, nil, 1, "--password-file"},
		{"unknown flag", append(args, "repo", "check", "--bogus"), nil, 2, "bogus"},
		{"bad output", append(args, "--output", "yaml", "repo", "stats"), nil, 2, "--output"},
		// The owner is looked up while the repository opens.
		{"unknown owner", append(args, "mount", t.TempDir(), "--backup", "latest", "--scratch", t.TempDir(), "--owner", "no-such-user-pgvault"), nil,
			2, `OS user "no-such-user-pgvault"`},
		{"unknown owner, wrong password", []string{"--repo", dir, "--password-file", wrongPw, "mount", t.TempDir(), "--backup", "latest", "--scratch", t.TempDir(), "--owner", "no-such-user-pgvault"}, nil,
			1, "wrong password or not a pgvault repository"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := pgv(t, tt.env, tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tt.wantCode, stderr)
			}
			if tt.name == "unknown flag" {
				return // urfave prints usage; the exit code is what matters
			}
			if line := oneLineErr(t, stderr); !strings.Contains(line, tt.wantMsg) {
				t.Fatalf("stderr %q does not contain %q", line, tt.wantMsg)
			}
		})
	}
}

func TestCheckNamesDamage(t *testing.T) {
	ctx := context.Background()
	dir, args := newRepo(t)
	storeSample(t, dir)
	be, _ := file.New(dir)
	var packs, indexes []string
	be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error { packs = append(packs, fi.Name); return nil })
	be.List(ctx, backend.IndexFile, func(fi backend.FileInfo) error { indexes = append(indexes, fi.Name); return nil })

	// A flipped bit in the middle of the first blob of every pack.
	victim := packs[0]
	path := filepath.Join(dir, "packs", victim[:2], victim)
	data, _ := os.ReadFile(path)
	data[40] ^= 0x04
	os.WriteFile(path, data, 0o600)
	code, out, stderr := pgv(t, nil, append(args, "repo", "check", "--read-data")...)
	if code != 3 {
		t.Fatalf("flipped bit: exit %d, want 3: %s %s", code, out, stderr)
	}
	if !strings.Contains(out, "pack "+victim) || !strings.Contains(out, "blob ") {
		t.Fatalf("check output does not name pack %s and a blob:\n%s", victim[:8], out)
	}
	oneLineErr(t, stderr)

	// A missing pack is named by the structure check alone.
	os.Remove(path)
	code, out, _ = pgv(t, nil, append(args, "repo", "check")...)
	if code != 3 || !strings.Contains(out, "pack "+victim+": missing") {
		t.Fatalf("missing pack: exit %d:\n%s", code, out)
	}

	// A truncated index is named, even when opening the repository.
	ipath := filepath.Join(dir, "index", indexes[0])
	idata, _ := os.ReadFile(ipath)
	os.WriteFile(ipath, idata[:len(idata)/2], 0o600)
	code, _, stderr = pgv(t, nil, append(args, "--cache-dir", t.TempDir(), "repo", "check")...)
	if code != 1 || !strings.Contains(stderr, "index "+indexes[0][:8]) {
		t.Fatalf("truncated index: exit %d: %s", code, stderr)
	}
	// rebuild-index recovers what the packs still hold.
	code, out, stderr = pgv(t, nil, append(args, "repo", "rebuild-index")...)
	if code != 0 {
		t.Fatalf("rebuild-index: exit %d: %s %s", code, out, stderr)
	}
}

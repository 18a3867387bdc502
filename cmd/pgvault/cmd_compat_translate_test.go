package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompatTranslateThenCheckConfig translates each tool's sample
// configuration and starts the result with `agent --check-config`, as an
// operator would after creating the secret files it names.
func TestCompatTranslateThenCheckConfig(t *testing.T) {
	const samples = "../../cmd/pgvault/translate/testdata/"
	tests := []struct {
		from, file string
		sites      string
	}{
		{"pghoard", "pghoard.json", "4 sites (analytics, default, ledger, reports)"},
		{"pgbackrest", "pgbackrest.conf", "3 sites (ledger, main, reporting)"},
		{"barman", "barman.conf", "2 sites (pg-legacy, pg-main)"},
		{"walg", "walg.json", "1 sites (main)"},
		{"walg", "walg-gcs.json", "1 sites (main)"},
		{"walg", "walg-azure.yaml", "1 sites (main)"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			dir := t.TempDir()
			secrets := filepath.Join(dir, "secrets")
			out := filepath.Join(dir, "pgvault.yaml")
			code, stdout, stderr := pgv(t, nil, "--output", "json", "compat", "translate", "--from", tt.from,
				"--secrets-dir", secrets, "-o", out, samples+tt.file)
			if code != 0 {
				t.Fatalf("translate: exit %d: %s", code, stderr)
			}
			var rep translateReport
			if err := json.Unmarshal([]byte(stdout), &rep); err != nil || len(rep.SecretFiles) == 0 || rep.NotCarried == 0 {
				t.Fatalf("translate report %s (%v)", stdout, err)
			}
			if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("output file: %v %v", fi, err)
			}
			// Before the secret files exist the check fails, naming one.
			code, _, stderr = pgv(t, nil, "agent", "--check-config", "--config", out)
			if code != 2 || !strings.Contains(oneLineErr(t, stderr), secrets) {
				t.Fatalf("check without secrets: exit %d: %s", code, stderr)
			}
			os.MkdirAll(secrets, 0o700)
			for _, f := range rep.SecretFiles {
				if err := os.WriteFile(f, []byte("pw\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			code, stdout, stderr = pgv(t, nil, "agent", "--check-config", "--config", out)
			if code != 0 || stdout != "configuration OK: "+tt.sites+"\n" {
				t.Fatalf("check: exit %d: %q %s", code, stdout, stderr)
			}
			// The agent's own secret rule applies.
			os.Chmod(rep.SecretFiles[0], 0o644)
			code, _, stderr = pgv(t, nil, "agent", "--check-config", "--config", out)
			if code != 2 || !strings.Contains(oneLineErr(t, stderr), "readable by every user") {
				t.Fatalf("world-readable secret: exit %d: %s", code, stderr)
			}
			// Translating again over the file needs --force.
			code, _, stderr = pgv(t, nil, "compat", "translate", "--from", tt.from, "-o", out, samples+tt.file)
			if code != 2 || !strings.Contains(stderr, "--force") {
				t.Fatalf("overwrite: exit %d: %s", code, stderr)
			}
			code, _, stderr = pgv(t, nil, "compat", "translate", "--from", tt.from, "--force", "-o", out, samples+tt.file)
			if code != 0 {
				t.Fatalf("--force: exit %d: %s", code, stderr)
			}
		})
	}
}

func TestCompatTranslateStdout(t *testing.T) {
	code, stdout, stderr := pgv(t, nil, "compat", "translate", "--from", "wal-g", "--site", "db1", "../../cmd/pgvault/translate/testdata/walg.json")
	if code != 0 || !strings.Contains(stdout, "\nsites:\n  db1:\n") || strings.Contains(stdout, "wJalrXUtnFEMI") {
		t.Fatalf("exit %d: %s %s", code, stdout, stderr)
	}
}

func TestCompatTranslateAndCheckConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.conf")
	os.WriteFile(bad, []byte("[global]\nnot an option\n"), 0o600)
	badYAML := filepath.Join(dir, "pgvault.yaml")
	os.WriteFile(badYAML, []byte("sites:\n  a:\n    pg: host=x\n    repo: file:///tmp/r\n    bogus: 1\n"), 0o600)
	tests := []struct {
		name    string
		args    []string
		code    int
		wantErr string
	}{
		{"unknown tool", []string{"compat", "translate", "--from", "bacula", bad}, 2, `unknown tool "bacula"`},
		{"no from", []string{"compat", "translate", bad}, 2, "from"},
		{"no file", []string{"compat", "translate", "--from", "pghoard"}, 2, "one FILE"},
		{"missing file", []string{"compat", "translate", "--from", "pghoard", filepath.Join(dir, "none.json")}, 1, "no such file"},
		{"syntax error", []string{"compat", "translate", "--from", "pgbackrest", bad}, 2, "bad.conf:2:"},
		{"json without -o", []string{"--output", "json", "compat", "translate", "--from", "pgbackrest", bad}, 2, "--out"},
		{"check bad config", []string{"agent", "--check-config", "--config", badYAML}, 2, "sites.a.bogus (line 5): unknown field"},
		{"check no config", []string{"agent", "--check-config", "--config", filepath.Join(dir, "none.yaml")}, 2, "no such file"},
		{"status has no check-config", []string{"status", "--check-config", "--config", badYAML}, 2, "check-config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := pgv(t, nil, tt.args...)
			if code != tt.code || !strings.Contains(oneLineErr(t, stderr), tt.wantErr) {
				t.Fatalf("exit %d, want %d with %q: %s", code, tt.code, tt.wantErr, stderr)
			}
		})
	}
}

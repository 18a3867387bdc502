package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestKeyCacheSources: the derived key is cached only for a password
// file, never for PGVAULT_PASSWORD or with --no-key-cache, and editing
// the password file voids the entry.
func TestKeyCacheSources(t *testing.T) {
	_, args := newRepo(t) // args: --repo, --password-file, --cache-dir
	pwFile, cacheDir := args[3], args[5]
	entries := func() []string {
		m, _ := filepath.Glob(filepath.Join(cacheDir, "*", "keys", "*"))
		return m
	}
	list := func(env map[string]string, extra ...string) {
		t.Helper()
		if code, _, stderr := pgv(t, env, append(append(extra, args...), "list")...); code != 0 {
			t.Fatalf("list: exit %d: %s", code, stderr)
		}
	}
	for _, e := range entries() {
		os.Remove(e) // repo init may have left one
	}

	list(map[string]string{"PGVAULT_PASSWORD": "s3cret"})
	if n := len(entries()); n != 0 {
		t.Fatalf("PGVAULT_PASSWORD: %d cache entries, want none", n)
	}
	list(nil, "--no-key-cache")
	if n := len(entries()); n != 0 {
		t.Fatalf("--no-key-cache: %d cache entries, want none", n)
	}
	list(map[string]string{"PGVAULT_PASSWORD": ""})
	if n := len(entries()); n != 1 {
		t.Fatalf("--password-file: %d cache entries, want one", n)
	}

	// A new password in the file (same length, so only the time tells):
	// the cached key is not trusted, and the wrong password is refused.
	old, err := os.Stat(pwFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pwFile, []byte("s3cres\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A distinct modification time without waiting for the clock.
	later := old.ModTime().Add(time.Second)
	if err := os.Chtimes(pwFile, later, later); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := pgv(t, nil, append(args, "list")...); code == 0 {
		t.Fatal("a changed password file opened the repository through the cached key")
	}
}

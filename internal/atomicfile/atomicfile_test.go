package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		opts Options
		want os.FileMode
	}{
		{"default", Options{}, 0o600},
		{"mode", Options{Perm: 0o644}, 0o644},
		{"nosync", Options{NoSync: true, Perm: 0o640}, 0o640},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.name)
			if err := os.WriteFile(p, []byte("old"), 0o666); err != nil {
				t.Fatal(err)
			}
			if err := WriteFile(p, []byte("new content"), c.opts); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(p)
			if err != nil || string(got) != "new content" {
				t.Fatalf("read back %q, %v", got, err)
			}
			fi, _ := os.Stat(p)
			if fi.Mode().Perm() != c.want {
				t.Errorf("mode %v, want %v", fi.Mode().Perm(), c.want)
			}
		})
	}
	assertNoTemps(t, dir)
}

func TestAbortKeepsOldContent(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	os.WriteFile(p, []byte("old"), 0o600)
	f, err := Create(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("half"))
	f.Abort()
	f.Abort() // twice is harmless
	if got, _ := os.ReadFile(p); string(got) != "old" {
		t.Fatalf("after abort: %q", got)
	}
	if err := f.Commit(); err == nil {
		t.Fatal("commit after abort succeeded")
	}
	assertNoTemps(t, dir)
}

func TestCommitFailureRemovesTemp(t *testing.T) {
	dir := t.TempDir()
	// The target is a non-empty folder: rename over it fails.
	p := filepath.Join(dir, "busy")
	os.MkdirAll(filepath.Join(p, "x"), 0o700)
	if err := WriteFile(p, []byte("data"), Options{}); err == nil {
		t.Fatal("write over a non-empty folder succeeded")
	}
	assertNoTemps(t, dir)
}

func TestIsTemp(t *testing.T) {
	for name, want := range map[string]bool{
		".config.tmp-123": true, "config": false, ".hidden": false, "a.tmp-1": false,
	} {
		if IsTemp(name) != want {
			t.Errorf("IsTemp(%q) = %v", name, !want)
		}
	}
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if IsTemp(e.Name()) {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

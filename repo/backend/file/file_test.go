package file_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/pgvault/pgvault/internal/atomicfile"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/backendtest"
	"github.com/pgvault/pgvault/repo/backend/file"
)

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		b, err := file.New(filepath.Join(t.TempDir(), "repo"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

// TestLeftoverTempFilesAreNotListed simulates a process killed during Save:
// the temporary file it was writing stays behind, and must never show up as
// an object.
func TestLeftoverTempFilesAreNotListed(t *testing.T) {
	dir := t.TempDir()
	b, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	objects := []backend.Handle{
		{Type: backend.ConfigFile},
		{Type: backend.KeyFile, Name: "k"},
		{Type: backend.PackFile, Name: "ab01"},
		{Type: backend.SnapshotFile, Name: "s"},
		{Type: backend.WALFile, Name: "00000001/000000010000000000000002"},
	}
	for _, h := range objects {
		if err := b.Save(ctx, h, []byte("whole")); err != nil {
			t.Fatal(err)
		}
	}
	// A Save that completes leaves no temporary file.
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && atomicfile.IsTemp(d.Name()) {
			t.Errorf("Save left %s", p)
		}
		return nil
	})
	// What a killed Save leaves: a half-written temporary file beside the
	// object it was going to become, named by atomicfile
	// (".<name>.tmp-<random>") or, by versions before it, ".tmp-<hex>".
	for _, rel := range []string{
		".tmp-00112233",
		".config.tmp-1234",
		"keys/.tmp-44556677",
		"keys/.k.tmp-5678",
		"packs/ab/.tmp-8899aabb",
		"packs/ab/.ab01.tmp-9abc",
		"snapshots/.tmp-ccddeeff",
		"snapshots/.s.tmp-def0",
		"wal/00000001/.tmp-01020304",
		"wal/00000001/.000000010000000000000002.tmp-42",
		"wal/.tmp-05060708",
	} {
		if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(rel)), []byte("ha"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, ft := range backend.AllTypes {
		var names []string
		err := b.List(ctx, ft, func(fi backend.FileInfo) error {
			names = append(names, fi.Name)
			if fi.Size != int64(len("whole")) {
				t.Errorf("List(%v): %q has size %d, want %d", ft, fi.Name, fi.Size, len("whole"))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("List(%v): %v", ft, err)
		}
		want := 0
		for _, h := range objects {
			if h.Type == ft {
				want++
			}
		}
		if len(names) != want {
			t.Errorf("List(%v) = %q, want %d object(s) and no temporary files", ft, names, want)
		}
	}
}

// TestRootSavesAsTheRepositoryOwner: root writing into a repository whose
// folder belongs to another user gives that user what it creates (files
// and folders), so the owner's restore_command can still read them; in a
// repository of root's own, files stay root's.
func TestRootSavesAsTheRepositoryOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to write as root into another user's folder")
	}
	const uid, gid = 65534, 65534 // nobody
	for _, tc := range []struct {
		name     string
		chown    bool
		wantUser uint32
	}{
		{"another user's repository", true, uid},
		{"root's repository", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "repo")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if tc.chown {
				if err := os.Chown(dir, uid, gid); err != nil {
					t.Fatal(err)
				}
			}
			b, err := file.New(dir)
			if err != nil {
				t.Fatal(err)
			}
			h := backend.Handle{Type: backend.PackFile, Name: "ab01cd"}
			if err := b.Save(context.Background(), h, []byte("pack")); err != nil {
				t.Fatal(err)
			}
			err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
				if err != nil || path == dir {
					return err
				}
				fi, err := os.Lstat(path)
				if err != nil {
					return err
				}
				if got := fi.Sys().(*syscall.Stat_t).Uid; got != tc.wantUser {
					t.Errorf("%s is owned by %d, want %d", path, got, tc.wantUser)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

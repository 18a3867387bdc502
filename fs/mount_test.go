package fs

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/fs/fstest"
)

func TestCheckMountpoint(t *testing.T) {
	empty := t.TempDir()
	full := t.TempDir()
	os.WriteFile(filepath.Join(full, "x"), nil, 0o600)
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o600)
	tests := []struct {
		name string
		dir  string
		want error
		text string
	}{
		{"empty folder", empty, nil, ""},
		{"not empty", full, ErrMountpoint, "is not empty"},
		{"missing", filepath.Join(empty, "nope"), ErrMountpoint, "does not exist"},
		{"a file", file, ErrMountpoint, "is not a folder"},
		{"a mount point", "/proc", ErrMountpointBusy, "already a mount point"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkDir(tt.dir)
			if !errors.Is(err, tt.want) || (tt.want != nil && !strings.Contains(err.Error(), tt.text)) {
				t.Fatalf("checkDir(%s) = %v, want %v (%q)", tt.dir, err, tt.want, tt.text)
			}
		})
	}
}

func TestScanMountinfo(t *testing.T) {
	info := "36 35 98:0 / /mnt/my\\040dir rw,noatime master:1 - fuse.pgvault pgvault rw\n" +
		"37 35 98:0 / /srv/data rw - ext4 /dev/sda rw\n"
	tests := []struct {
		dir  string
		want bool
	}{
		{"/mnt/my dir", true},
		{"/srv/data", true},
		{"/srv", false},
	}
	for _, tt := range tests {
		if got, err := scanMountinfo(strings.NewReader(info), tt.dir); err != nil || got != tt.want {
			t.Errorf("scanMountinfo(%q) = %v, %v; want %v", tt.dir, got, err, tt.want)
		}
	}
}

// TestChildrenDoNotInheritFUSE: a program the mounting process starts
// (PostgreSQL under verify --boot and synthetic backups) must not hold the
// FUSE connection, or it outlives a killed pgvault, stuck for good.
func TestChildrenDoNotInheritFUSE(t *testing.T) {
	if err := CheckFUSE(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r, s, _ := fstest.Store(t, fstest.SampleTree())
	ov := openTestOverlay(t, r, s, t.TempDir())
	defer ov.Close(ctx)
	m, err := Mount(ctx, t.TempDir(), NewInstantRoot(ov, InstantOptions{}), MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmount(ctx)
	out, err := exec.Command("sh", "-c", `readlink /proc/$$/fd/* 2>/dev/null; true`).Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "/dev/fuse") {
		t.Fatalf("a child process holds the FUSE connection; its descriptors:\n%s", out)
	}
}

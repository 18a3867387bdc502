package backup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/internal/atomicfile"
	"github.com/pgvault/pgvault/internal/pg/wal"
)

func TestWriteRecoveryConfig(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "postgresql.auto.conf"), []byte("# Do not edit\nrestore_command = 'old'\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "postgresql.conf"), []byte("port = 5432\nrecovery_target_name = 'x' # left over\n#recovery_target_time = ''\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "standby.signal"), nil, 0o600)

	c := wal.RecoveryConfig{RestoreCommand: "pgvault wal fetch %f %p", Target: wal.LSNTarget(0x3000060), Action: wal.ActionPromote}
	res, err := WriteRecoveryConfig(dir, c, "pgvault restore of backup 1a2b3c4d")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(res.AutoConf)
	want := "# Do not edit\n# disabled by pgvault restore: restore_command = 'old'\n# pgvault restore of backup 1a2b3c4d\n" + c.Render()
	if string(got) != want {
		t.Errorf("postgresql.auto.conf =\n%s\nwant\n%s", got, want)
	}
	if res.Disabled != 1 {
		t.Errorf("Disabled = %d, want 1", res.Disabled)
	}
	if _, err := os.Stat(filepath.Join(dir, "recovery.signal")); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "standby.signal")); err == nil {
		t.Error("standby.signal is still there: PostgreSQL would start a standby")
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "line 2 sets recovery_target_name") {
		t.Errorf("warnings = %q", res.Warnings)
	}
	fi, _ := os.Stat(res.AutoConf)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("postgresql.auto.conf mode %v", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if atomicfile.IsTemp(e.Name()) {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}

	// A standby next: recovery.signal goes, standby.signal comes.
	s := wal.RecoveryConfig{RestoreCommand: "x %f %p", Standby: true, PrimaryConnInfo: "host=db1"}
	if _, err := WriteRecoveryConfig(dir, s, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "recovery.signal")); err == nil {
		t.Error("recovery.signal is still there")
	}
	got, _ = os.ReadFile(filepath.Join(dir, "postgresql.auto.conf"))
	if !strings.HasSuffix(string(got), s.Render()) || strings.Contains(string(got), "\nrecovery_target_lsn") {
		t.Errorf("second configuration:\n%s", got)
	}

	if _, err := WriteRecoveryConfig(dir, wal.RecoveryConfig{Standby: true, Target: wal.ImmediateTarget()}, ""); err == nil {
		t.Error("an invalid configuration was written")
	}
}

func TestCheckReadableBy(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o711) // the test's own temp root
	os.Chmod(dir, 0o755)
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("x"), 0o600)
	me := uint32(os.Getuid())
	if err := CheckReadableBy(pw, me, uint32(os.Getgid())); err != nil {
		t.Errorf("the owner cannot read: %v", err)
	}
	const nobody = 65534
	err := CheckReadableBy(pw, nobody, nobody)
	if me != nobody && (err == nil || !strings.Contains(err.Error(), "not readable by uid 65534")) {
		t.Errorf("another user: err = %v", err)
	}
	os.Chmod(pw, 0o644)
	os.Chmod(dir, 0o700)
	err = CheckReadableBy(pw, nobody, nobody)
	if me != nobody && (err == nil || !strings.Contains(err.Error(), "cannot be entered")) {
		t.Errorf("closed folder: err = %v", err)
	}
	os.Chmod(dir, 0o711)
	if err := CheckReadableBy(pw, nobody, nobody); err != nil {
		t.Errorf("world-readable file: %v", err)
	}
}

package wal_test

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/internal/pg/wal"
)

func TestQuoteConfString(t *testing.T) {
	for in, want := range map[string]string{
		"":                 "''",
		"plain":            "'plain'",
		"it's":             "'it''s'",
		`C:\path`:          `'C:\\path'`,
		"a\nb\tc\rd":       `'a\nb\tc\rd'`,
		"''":               "''''''",
		"héllo wörld":      "'héllo wörld'",
		`\'`:               `'\\'''`,
		"host=x password=": "'host=x password='",
	} {
		if got := wal.QuoteConfString(in); got != want {
			t.Errorf("QuoteConfString(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestRestoreCommand(t *testing.T) {
	got := wal.RestoreCommand("/usr/local/bin/pgvault", "--repo", "s3://b/p?endpoint=http://h:9000&x=%2F", "--password-file", "/etc/pg vault/it's")
	want := `/usr/local/bin/pgvault --repo 's3://b/p?endpoint=http://h:9000&x=%%2F' --password-file '/etc/pg vault/it'\''s' %f %p`
	if got != want {
		t.Fatalf("RestoreCommand =\n%s\nwant\n%s", got, want)
	}
}

// TestRestoreCommandThroughShell checks the quoting end to end: PostgreSQL's
// % substitution (done here as it does it), then /bin/sh.
func TestRestoreCommandThroughShell(t *testing.T) {
	args := []string{"it's", "a b", "100%", `back\slash`, "$HOME", "`x`", "%f", ""}
	cmd := wal.RestoreCommand(append([]string{"printf", `%s\n`}, args...)...)
	expanded := pgSubstitute(cmd, "000000010000000000000003", "pg_wal/RECOVERYXLOG")
	out, err := exec.Command("/bin/sh", "-c", expanded).Output()
	if err != nil {
		t.Fatalf("sh -c %s: %v", expanded, err)
	}
	want := strings.Join(append(args, "000000010000000000000003", "pg_wal/RECOVERYXLOG"), "\n") + "\n"
	if string(out) != want {
		t.Fatalf("the shell saw\n%q\nwant\n%q", out, want)
	}
}

// pgSubstitute does what PostgreSQL's replace_percent_placeholders does
// to restore_command.
func pgSubstitute(cmd, f, p string) string {
	var b strings.Builder
	for i := 0; i < len(cmd); i++ {
		if cmd[i] == '%' && i+1 < len(cmd) {
			switch cmd[i+1] {
			case 'f':
				b.WriteString(f)
				i++
				continue
			case 'p':
				b.WriteString(p)
				i++
				continue
			case '%':
				b.WriteByte('%')
				i++
				continue
			}
		}
		b.WriteByte(cmd[i])
	}
	return b.String()
}

func TestRecoveryConfigRender(t *testing.T) {
	rc := `/bin/pgvault --repo /r wal fetch %f %p`
	for _, tc := range []struct {
		name   string
		c      wal.RecoveryConfig
		signal string
		want   string
	}{
		{"end of archive", wal.RecoveryConfig{RestoreCommand: rc}, "recovery.signal",
			"restore_command = '/bin/pgvault --repo /r wal fetch %f %p'\nrecovery_target_timeline = 'latest'\n"},
		{"time, default action", wal.RecoveryConfig{RestoreCommand: rc, Target: wal.TimeTarget(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))}, "recovery.signal",
			"restore_command = '/bin/pgvault --repo /r wal fetch %f %p'\nrecovery_target_time = '2026-01-02 03:04:05.000000+00'\n" +
				"recovery_target_inclusive = 'true'\nrecovery_target_action = 'pause'\nrecovery_target_timeline = 'latest'\n"},
		{"lsn exclusive promote timeline 3", wal.RecoveryConfig{RestoreCommand: rc, Target: wal.Target{Kind: wal.TargetLSN, LSN: 0x3000060, Exclusive: true},
			Action: wal.ActionPromote, Timeline: wal.TimelineGoal{Kind: wal.TimelineID, ID: 3}}, "recovery.signal",
			"restore_command = '/bin/pgvault --repo /r wal fetch %f %p'\nrecovery_target_lsn = '0/3000060'\n" +
				"recovery_target_inclusive = 'false'\nrecovery_target_action = 'promote'\nrecovery_target_timeline = '3'\n"},
		{"name", wal.RecoveryConfig{RestoreCommand: rc, Target: wal.NameTarget("before 'upgrade'"), Action: wal.ActionShutdown,
			Timeline: wal.TimelineGoal{Kind: wal.TimelineCurrent}}, "recovery.signal",
			"restore_command = '/bin/pgvault --repo /r wal fetch %f %p'\nrecovery_target_name = 'before ''upgrade'''\n" +
				"recovery_target_action = 'shutdown'\nrecovery_target_timeline = 'current'\n"},
		{"immediate", wal.RecoveryConfig{RestoreCommand: rc, Target: wal.ImmediateTarget()}, "recovery.signal",
			"restore_command = '/bin/pgvault --repo /r wal fetch %f %p'\nrecovery_target = 'immediate'\n" +
				"recovery_target_action = 'pause'\nrecovery_target_timeline = 'latest'\n"},
		{"xid", wal.RecoveryConfig{RestoreCommand: rc, Target: wal.XIDTarget(742), Action: wal.ActionPromote}, "recovery.signal",
			"restore_command = '/bin/pgvault --repo /r wal fetch %f %p'\nrecovery_target_xid = '742'\n" +
				"recovery_target_inclusive = 'true'\nrecovery_target_action = 'promote'\nrecovery_target_timeline = 'latest'\n"},
		{"standby", wal.RecoveryConfig{RestoreCommand: rc, Standby: true, PrimaryConnInfo: "host=db1 user=rep password='it''s' application_name=s1"}, "standby.signal",
			"restore_command = '/bin/pgvault --repo /r wal fetch %f %p'\nrecovery_target_timeline = 'latest'\n" +
				"primary_conninfo = 'host=db1 user=rep password=''it''''s'' application_name=s1'\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.c.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := tc.c.Render(); got != tc.want {
				t.Errorf("Render =\n%s\nwant\n%s", got, tc.want)
			}
			if tc.c.SignalFile() != tc.signal {
				t.Errorf("SignalFile = %s, want %s", tc.c.SignalFile(), tc.signal)
			}
		})
	}
}

func TestRecoveryConfigValidate(t *testing.T) {
	for name, c := range map[string]wal.RecoveryConfig{
		"action without target":  {RestoreCommand: "x", Action: wal.ActionPromote},
		"bad action":             {RestoreCommand: "x", Target: wal.ImmediateTarget(), Action: "resume"},
		"standby with target":    {RestoreCommand: "x", Standby: true, Target: wal.ImmediateTarget()},
		"conninfo, no standby":   {RestoreCommand: "x", PrimaryConnInfo: "host=x"},
		"standby without source": {Standby: true},
		"timeline 0":             {RestoreCommand: "x", Timeline: wal.TimelineGoal{Kind: wal.TimelineID}},
		"bad target":             {RestoreCommand: "x", Target: wal.Target{Kind: wal.TargetLSN}},
	} {
		if err := c.Validate(); !errors.Is(err, wal.ErrInvalidTarget) {
			t.Errorf("%s: err = %v, want ErrInvalidTarget", name, err)
		}
	}
}

func TestApplyRecoveryConfig(t *testing.T) {
	old := "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n" +
		"work_mem = '64MB'\n" +
		"restore_command = 'cp /old/%f %p'\n" +
		"  Recovery_Target_Time='2020-01-01'\n" +
		"recovery_target_timeline 'current'\n" +
		"# restore_command = 'commented'\n" +
		"primary_conninfo = 'host=old'\n" +
		"recovery_target_inclusive = off" // no final newline
	c := wal.RecoveryConfig{RestoreCommand: "new %f %p", Target: wal.LSNTarget(0x3000060), Action: wal.ActionPromote}
	got := string(wal.ApplyRecoveryConfig([]byte(old), c, "pgvault restore of\nbackup 1a2b3c4d"))
	want := "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n" +
		"work_mem = '64MB'\n" +
		"# disabled by pgvault restore: restore_command = 'cp /old/%f %p'\n" +
		"# disabled by pgvault restore:   Recovery_Target_Time='2020-01-01'\n" +
		"# disabled by pgvault restore: recovery_target_timeline 'current'\n" +
		"# restore_command = 'commented'\n" +
		"# disabled by pgvault restore: primary_conninfo = 'host=old'\n" +
		"# disabled by pgvault restore: recovery_target_inclusive = off\n" +
		"# pgvault restore of backup 1a2b3c4d\n" +
		"restore_command = 'new %f %p'\nrecovery_target_lsn = '0/3000060'\nrecovery_target_inclusive = 'true'\n" +
		"recovery_target_action = 'promote'\nrecovery_target_timeline = 'latest'\n"
	if got != want {
		t.Fatalf("ApplyRecoveryConfig =\n%s\nwant\n%s", got, want)
	}
	// Applying again disables the first round and leaves one active set.
	again := string(wal.ApplyRecoveryConfig([]byte(got), wal.RecoveryConfig{RestoreCommand: "third %f %p"}, ""))
	if n := strings.Count(again, "\nrestore_command = "); n != 1 {
		t.Fatalf("%d active restore_command lines after a second apply:\n%s", n, again)
	}
	if strings.Contains(again, "\nrecovery_target_lsn") {
		t.Fatalf("the earlier target is still active:\n%s", again)
	}
	if got := string(wal.ApplyRecoveryConfig(nil, wal.RecoveryConfig{RestoreCommand: "x"}, "")); got != "restore_command = 'x'\nrecovery_target_timeline = 'latest'\n" {
		t.Fatalf("empty file: %q", got)
	}
}

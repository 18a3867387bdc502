package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// dropInLines are the archive_command and restore_command lines each
// tool's users have in postgresql.conf, unchanged: the site of pgvault's
// configuration is pghoard's --site, pgBackRest's --stanza, Barman's
// server name, and for WAL-G (no site option) PGVAULT_SITE.
var dropInLines = []struct {
	tool             string
	archive, restore string
}{
	{"pghoard", "pghoard_postgres_command --mode archive --site default --xlog %f",
		"pghoard_postgres_command --mode restore --site default --xlog %f --output %p"},
	{"pgbackrest", "pgbackrest --stanza=main archive-push %p",
		`pgbackrest --stanza=main archive-get %f "%p"`},
	{"wal-g", "wal-g wal-push %p", "wal-g wal-fetch %f %p"},
	{"barman", "barman-wal-archive backup-host pg %p",
		"barman-wal-restore -U barman backup-host pg %f %p"},
}

// TestDropIns: pgvault installed under the names of pghoard's, pgBackRest's,
// WAL-G's and Barman's commands archives a real PostgreSQL's WAL through
// each tool's own archive_command line, takes and lists backups through
// their backup and info commands, and brings the cluster back through
// each tool's own restore_command line.
func TestDropIns(t *testing.T) {
	v := newPITRVault(t)
	shims := pgtest.TempDir(t)
	for _, name := range []string{"pghoard_postgres_command", "pgbackrest", "wal-g", "barman-wal-archive", "barman-wal-restore"} {
		if err := os.Symlink(pgvaultBin, filepath.Join(shims, name)); err != nil {
			t.Fatal(err)
		}
	}
	// The lines name the commands without a path, as the tools' users
	// write them: the server finds them on its PATH.
	t.Setenv("PATH", shims+":"+os.Getenv("PATH"))
	t.Setenv("PGVAULT_SITE", "walg")
	conf := filepath.Join(v.base, "pgvault.yaml") // written once the server's address is known
	t.Setenv("PGVAULT_CONFIG", conf)

	c := pgtest.Start(t, pgtest.Options{Settings: map[string]string{"archive_mode": "on", "archive_command": dropInLines[0].archive}})
	c.CreateMarkers(t)
	var sites strings.Builder
	for _, site := range []string{"default", "main", "walg", "pg"} {
		fmt.Fprintf(&sites, "  %s:\n    pg: %q\n    repo: %s\n    password_file: %s\n    cache_dir: %s\n    mode: archive\n    basebackup: {fast_checkpoint: true}\n",
			site, c.ReplicationConnString(), v.repo, v.pw, v.cache)
	}
	if err := os.WriteFile(conf, []byte("sites:\n"+sites.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	pgOwn(t, conf)

	// shim runs a drop-in as postgres, as the server and the tools' cron
	// lines run them.
	shim := func(name string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		return succeeded(t, runCmd(t, pgtest.RunAsPostgres(ctx, filepath.Join(shims, name), args...), args), append([]string{name}, args...))
	}

	backupOut := shim("pgbackrest", "--stanza=main", "--type=full", "--start-fast", "--log-level-console=info", "backup")
	if !strings.Contains(backupOut, "backup ") {
		t.Fatalf("pgbackrest backup: %s", backupOut)
	}
	var archived []string
	for _, tool := range dropInLines {
		c.Exec(t, "ALTER SYSTEM SET archive_command = '"+strings.ReplaceAll(tool.archive, "'", "''")+"'")
		c.Exec(t, "SELECT pg_reload_conf()")
		waitFor(t, time.Minute, tool.tool+"'s archive_command in force", func() (bool, error) {
			return c.QueryString(t, "SHOW archive_command") == tool.archive, nil
		})
		c.InsertMarker(t, tool.tool)
		seg := c.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_lsn())")
		c.SwitchWAL(t)
		waitFor(t, time.Minute, tool.tool+"'s archive_command to archive "+seg, func() (bool, error) {
			var last string
			var failed int64
			if err := c.Conn(t, "postgres").QueryRow(t.Context(), "SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver").Scan(&last, &failed); err != nil {
				return false, err
			}
			if failed > 0 {
				return false, fmt.Errorf("archive_command %q failed: see the server log", tool.archive)
			}
			return last >= seg, nil
		})
		archived = append(archived, seg)
	}
	wantMarkers := c.CountMarkers(t)

	// Monitoring's view through the tools' own listing commands.
	var info []struct {
		Name   string `json:"name"`
		Status struct {
			Code int `json:"code"`
		} `json:"status"`
		Archive []struct{ Min, Max string } `json:"archive"`
		Backup  []struct {
			Label     string `json:"label"`
			Type      string `json:"type"`
			Timestamp struct{ Start, Stop int64 }
		} `json:"backup"`
	}
	out := shim("pgbackrest", "--stanza=main", "--output=json", "info")
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("pgbackrest info --output=json: %v\n%s", err, out)
	}
	last := archived[len(archived)-1]
	if len(info) != 1 || info[0].Name != "main" || info[0].Status.Code != 0 || len(info[0].Backup) != 1 || info[0].Backup[0].Type != "full" ||
		info[0].Backup[0].Timestamp.Stop < info[0].Backup[0].Timestamp.Start || len(info[0].Archive) != 1 || info[0].Archive[0].Max < last {
		t.Fatalf("pgbackrest info --output=json (want one full backup and WAL up to %s): %s", last, out)
	}
	var list []struct {
		Name string `json:"backup_name"`
		WAL  string `json:"wal_file_name"`
		ID   string `json:"pgvault_id"`
	}
	out = shim("wal-g", "backup-list", "--json")
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || list[0].Name != "base_"+list[0].WAL || list[0].ID != info[0].Backup[0].Label {
		t.Fatalf("wal-g backup-list --json: %v\n%s", err, out)
	}
	c.Stop(t, "fast")

	// Back through each tool's restore_command: the backup restored
	// without recovery settings (wal-g's backup-fetch writes none either),
	// then the tool's line and recovery.signal, as its users write them.
	for _, tool := range dropInLines {
		t.Run(tool.tool, func(t *testing.T) {
			target := filepath.Join(pgtest.TempDir(t), "data")
			if tool.tool == "wal-g" {
				shim("wal-g", "backup-fetch", target, list[0].Name)
			} else {
				v.must("restore", "latest", "--target", target, "--no-recovery-config")
			}
			f, err := os.OpenFile(filepath.Join(target, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(f, "restore_command = '%s'\narchive_mode = off\n", strings.ReplaceAll(tool.restore, "'", "''"))
			f.Close()
			if err := os.WriteFile(filepath.Join(target, "recovery.signal"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			pgOwn(t, filepath.Join(target, "recovery.signal"))
			r := pgtest.StartOn(t, target, pgtest.Options{})
			waitFor(t, 2*time.Minute, "the restored cluster to promote", func() (bool, error) {
				return r.QueryString(t, "SELECT pg_is_in_recovery()::text") == "false", nil
			})
			if got := r.CountMarkers(t); got != wantMarkers {
				t.Fatalf("restored through %s's restore_command: %d markers, want %d (WAL archived through every tool's line)", tool.tool, got, wantMarkers)
			}
			r.Stop(t, "fast")
		})
	}

	t.Run("refusals", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"pgbackrest", []string{"--stanza=nosuch", "info"}, `--stanza "nosuch": no such site in ` + conf},
			{"pghoard_postgres_command", []string{"--mode", "copy", "--site", "default", "--xlog", "000000010000000000000001"}, `--mode "copy": use archive or restore`},
			{"barman-wal-restore", []string{"backup-host", "pg", "000000010000000000000001"}, "want BARMAN_HOST SERVER_NAME WAL_NAME WAL_DEST"},
			{"wal-g", []string{"wal-fetch", "000000010000000000000001"}, "want the WAL file's name and destination"},
		} {
			res := runCmd(t, pgtest.RunAsPostgres(ctx, filepath.Join(shims, tc.name), tc.args...), tc.args)
			if res.code != 2 || !strings.Contains(res.stderr, tc.want) {
				t.Errorf("%s %v: exit %d, %s; want exit 2 and %q", tc.name, tc.args, res.code, res.stderr, tc.want)
			}
		}
		// A segment that is not archived: restore_command's "not found".
		dest := filepath.Join(pgtest.TempDir(t), "seg")
		res := runCmd(t, pgtest.RunAsPostgres(ctx, filepath.Join(shims, "pgbackrest"), "--stanza=main", "archive-get", "0000000100000000000000FF", dest), nil)
		if res.code != 1 {
			t.Errorf("archive-get of a segment never archived: exit %d (%s), want 1", res.code, res.stderr)
		}
	})
}

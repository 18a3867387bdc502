package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/cmd/pgvault/agent"
	"github.com/pgvault/pgvault/internal/service"
	"github.com/pgvault/pgvault/stream"
)

// walgCommand answers WAL-G's PostgreSQL command lines:
//
//	archive_command = 'wal-g wal-push %p'
//	restore_command = 'wal-g wal-fetch %f %p'
//	wal-g backup-push $PGDATA
//	wal-g backup-fetch $PGDATA LATEST
//	wal-g backup-list [--json] [--detail]
//
// WAL-G has no site option (its storage comes from WALG_* variables): the
// site is PGVAULT_SITE, else the configuration's only site.
func walgCommand() *cli.Command {
	return dropInCommand("wal-g", "WAL-G: wal-push, wal-fetch, backup-push, backup-fetch, backup-list", runWALG)
}

var walgOptions = []foreignOption{
	{names: []string{"config"}, value: true},
	{names: []string{"json"}},
	{names: []string{"detail"}},
	{names: []string{"pretty"}},
	{names: []string{"full", "f"}},
	{names: []string{"permanent", "p"}},
	{names: []string{"verify"}},
	{names: []string{"turbo"}},
}

func runWALG(e *env, args []string) error {
	const tool = "wal-g"
	a, err := parseForeign(tool, args, walgOptions, false)
	if err != nil {
		return err
	}
	if len(a.pos) == 0 {
		return usagef("%s: no command (wal-push, wal-fetch, backup-push, backup-fetch or backup-list)", tool)
	}
	cmd, rest := a.pos[0], a.pos[1:]
	ctx := e.c.Context
	site := func() (*service.Site, *agent.Site, error) {
		return e.dropInSite(os.Getenv("PGVAULT_SITE"), "PGVAULT_SITE")
	}
	switch cmd {
	case "wal-push":
		if len(rest) != 1 {
			return usagef("%s wal-push: want the WAL file's path (%%p)", tool)
		}
		if err := checkWALPath(rest[0]); err != nil {
			return err
		}
		s, _, err := site()
		if err != nil {
			return err
		}
		return pushWAL(ctx, e, s, rest[0])
	case "wal-fetch":
		if len(rest) != 2 {
			return usagef("%s wal-fetch: want the WAL file's name and destination (%%f %%p)", tool)
		}
		if err := checkWALName(rest[0]); err != nil {
			return err
		}
		s, _, err := site()
		if err != nil {
			return err
		}
		return fetchWAL(ctx, e, s, rest[0], rest[1], walFetchOptions{prefetch: stream.DefaultPrefetch})
	case "backup-push":
		if len(rest) > 1 {
			return usagef("%s backup-push: want at most the data directory", tool)
		}
		s, as, err := site()
		if err != nil {
			return err
		}
		connect, err := dropInConnector(e, as)
		if err != nil {
			return err
		}
		o := backupOptions{method: string(backup.MethodAuto)}
		if len(rest) == 1 {
			o.pgdata = rest[0]
		}
		if as != nil {
			o.fastCheckpoint = as.Basebackup.FastCheckpoint
			if as.Basebackup.Method != "" {
				o.method = as.Basebackup.Method
			}
		}
		return backupTo(ctx, e, s, connect, o)
	case "backup-fetch":
		if len(rest) != 2 {
			return usagef("%s backup-fetch: want the destination and a backup name (or LATEST)", tool)
		}
		s, _, err := site()
		if err != nil {
			return err
		}
		ref, err := walgBackupRef(ctx, s, rest[1])
		if err != nil {
			return err
		}
		// WAL-G writes no recovery configuration: the operator adds
		// recovery.signal and restore_command. So does this.
		return restoreFrom(ctx, e, s, ref, restoreOptions{target: rest[0], noRecovery: true})
	case "backup-list":
		if len(rest) > 0 {
			return usagef("%s backup-list: unexpected argument %q", tool, rest[0])
		}
		s, _, err := site()
		if err != nil {
			return err
		}
		entries, err := s.List(ctx)
		if err != nil {
			return err
		}
		return walgBackupList(e.c.App.Writer, entries, a.has("json"), a.has("detail"), a.has("pretty"))
	}
	return usagef("%s: command %q is not one pgvault answers (wal-push, wal-fetch, backup-push, backup-fetch, backup-list)", tool, cmd)
}

// walgName is the WAL-G name of a backup: base_ and the segment it
// starts in, as WAL-G names its own.
func walgName(l service.ListEntry) string { return "base_" + l.StartWAL }

// walgBackupRef turns WAL-G's backup name (LATEST, base_<segment>) or a
// pgvault ID into the backup's ID.
func walgBackupRef(ctx context.Context, s *service.Site, name string) (string, error) {
	if name == "LATEST" {
		return "latest", nil
	}
	if !strings.HasPrefix(name, "base_") {
		return name, nil
	}
	entries, err := s.List(ctx)
	if err != nil {
		return "", err
	}
	var id string
	for _, l := range entries {
		if walgName(l) == name {
			id = l.ID // the newest of that name: a later backup in the same segment
		}
	}
	if id == "" {
		return "", fmt.Errorf("wal-g backup-fetch: no backup named %s (`wal-g backup-list` shows the names)", name)
	}
	return id, nil
}

// walgBackup is one entry of `wal-g backup-list --json` (with --detail,
// the fields after WALFileName too).
type walgBackup struct {
	BackupName  string     `json:"backup_name"`
	Time        time.Time  `json:"time"`
	WALFileName string     `json:"wal_file_name"`
	StartTime   *time.Time `json:"start_time,omitempty"`
	FinishTime  *time.Time `json:"finish_time,omitempty"`
	PgVersion   int        `json:"pg_version,omitempty"`
	StartLSN    string     `json:"start_lsn,omitempty"`
	FinishLSN   string     `json:"finish_lsn,omitempty"`
	IsPermanent *bool      `json:"is_permanent,omitempty"`
	UncompSize  int64      `json:"uncompressed_size,omitempty"`
	CompSize    int64      `json:"compressed_size,omitempty"`
	PgvaultID   string     `json:"pgvault_id"`
}

func walgBackupList(w io.Writer, entries []service.ListEntry, asJSON, detail, pretty bool) error {
	list := make([]walgBackup, 0, len(entries))
	for _, l := range entries {
		b := walgBackup{BackupName: walgName(l), Time: l.StopTime.UTC(), WALFileName: l.StartWAL, PgvaultID: l.ID}
		if detail {
			start, stop, no := l.StartTime.UTC(), l.StopTime.UTC(), false
			b.StartTime, b.FinishTime, b.IsPermanent = &start, &stop, &no
			b.PgVersion = serverVersionNum(l.ServerVersion)
			b.StartLSN, b.FinishLSN = l.StartLSN, l.StopLSN
			b.UncompSize, b.CompSize = l.Bytes, l.StoredBytes
		}
		list = append(list, b)
	}
	if asJSON {
		enc := json.NewEncoder(w)
		if pretty {
			enc.SetIndent("", "    ")
		}
		return enc.Encode(list)
	}
	if len(list) == 0 {
		fmt.Fprintln(w, "No backups found")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	if detail {
		fmt.Fprintln(tw, "name\tmodified\twal_segment_backup_start\tstart_time\tfinish_time\tpg_version\tstart_lsn\tfinish_lsn\tpermanent")
	} else {
		fmt.Fprintln(tw, "name\tmodified\twal_segment_backup_start")
	}
	for _, b := range list {
		if detail {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\tfalse\n", b.BackupName, b.Time.Format(time.RFC3339), b.WALFileName,
				b.StartTime.Format(time.RFC3339), b.FinishTime.Format(time.RFC3339), b.PgVersion, b.StartLSN, b.FinishLSN)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", b.BackupName, b.Time.Format(time.RFC3339), b.WALFileName)
		}
	}
	return tw.Flush()
}

// serverVersionNum is server_version_num of a version string ("15.18" is
// 150018), as WAL-G reports pg_version; 0 when it does not parse.
func serverVersionNum(v string) int {
	var major, minor int
	if n, _ := fmt.Sscanf(v, "%d.%d", &major, &minor); n == 0 {
		return 0
	}
	return major*10000 + minor
}

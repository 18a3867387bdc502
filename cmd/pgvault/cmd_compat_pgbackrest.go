package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/cmd/pgvault/agent"
	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/internal/service"
	"github.com/pgvault/pgvault/stream"
)

// pgbackrestCommand answers the pgBackRest command lines operators keep
// in postgresql.conf, cron and monitoring:
//
//	archive_command = 'pgbackrest --stanza=main archive-push %p'
//	restore_command = 'pgbackrest --stanza=main archive-get %f "%p"'
//	pgbackrest --stanza=main --type=full backup
//	pgbackrest --stanza=main --delta --type=time --target="..." restore
//	pgbackrest --stanza=main --output=json info
//
// The stanza is the site. pgBackRest reads most options from
// pgbackrest.conf; the ones pgvault has no use for are accepted and
// ignored (logged at debug level).
func pgbackrestCommand() *cli.Command {
	return dropInCommand("pgbackrest", "pgBackRest: archive-push, archive-get, backup, restore, info, check", runPgbackrest)
}

var pgbackrestOptions = []foreignOption{
	{names: []string{"stanza"}, value: true},
	{names: []string{"type"}, value: true},
	{names: []string{"target"}, value: true},
	{names: []string{"target-action"}, value: true},
	{names: []string{"target-timeline"}, value: true},
	{names: []string{"target-exclusive"}},
	{names: []string{"set"}, value: true},
	{names: []string{"pg1-path"}, value: true},
	{names: []string{"output"}, value: true},
	{names: []string{"start-fast"}},
	{names: []string{"no-start-fast"}},
	{names: []string{"delta"}},
	{names: []string{"process-max"}, value: true},
	{names: []string{"tablespace-map"}, value: true},
	{names: []string{"recovery-option"}, value: true},
}

func runPgbackrest(e *env, args []string) error {
	const tool = "pgbackrest"
	a, err := parseForeign(tool, args, pgbackrestOptions, true)
	if err != nil {
		return err
	}
	if len(a.ignored) > 0 {
		e.log.Debug("pgbackrest options pgvault does not use", "options", strings.Join(a.ignored, ", "))
	}
	if len(a.pos) == 0 {
		return usagef("%s: no command (archive-push, archive-get, backup, restore, info or check)", tool)
	}
	cmd, rest := a.pos[0], a.pos[1:]
	ctx := e.c.Context
	site := func() (*service.Site, error) {
		s, _, err := e.dropInSite(a.get("stanza"), "--stanza")
		return s, err
	}
	switch cmd {
	case "archive-push":
		if len(rest) != 1 {
			return usagef("%s archive-push: want the WAL file's path (%%p)", tool)
		}
		if err := checkWALPath(rest[0]); err != nil {
			return err
		}
		s, err := site()
		if err != nil {
			return err
		}
		return pushWAL(ctx, e, s, rest[0])
	case "archive-get":
		if len(rest) != 2 {
			return usagef("%s archive-get: want the WAL file's name and destination (%%f \"%%p\")", tool)
		}
		if err := checkWALName(rest[0]); err != nil {
			return err
		}
		s, err := site()
		if err != nil {
			return err
		}
		return fetchWAL(ctx, e, s, rest[0], rest[1], walFetchOptions{prefetch: stream.DefaultPrefetch})
	case "backup":
		return pgbackrestBackup(ctx, e, a)
	case "restore":
		o, ref, err := pgbackrestRestoreOptions(a)
		if err != nil {
			return err
		}
		s, err := site()
		if err != nil {
			return err
		}
		return restoreFrom(ctx, e, s, ref, o)
	case "info":
		s, err := site()
		if err != nil {
			return err
		}
		return pgbackrestInfo(ctx, e, s, a)
	case "check":
		s, err := site()
		if err != nil {
			return err
		}
		rep, err := s.CheckWAL(ctx)
		if err != nil {
			return err
		}
		if err := rep.Problem(); err != nil {
			return err
		}
		return e.out.emit(rep, func(w io.Writer) {
			fmt.Fprintf(w, "check of stanza %s: WAL from %s to %s is archived\n", a.get("stanza"), rep.From, rep.To)
		})
	}
	return usagef("%s: command %q is not one pgvault answers (archive-push, archive-get, backup, restore, info, check)", tool, cmd)
}

// pgbackrestBackup takes a backup. pgvault's backups are all full and
// deduplicated, so --type=incr and diff store as little as pgBackRest's
// incrementals would: the type is accepted and not recorded.
func pgbackrestBackup(ctx context.Context, e *env, a foreignArgs) error {
	switch t := a.get("type"); t {
	case "", "full", "incr", "diff":
	default:
		return usagef("pgbackrest backup: --type=%s: use full, incr or diff", t)
	}
	s, as, err := e.dropInSite(a.get("stanza"), "--stanza")
	if err != nil {
		return err
	}
	connect, err := dropInConnector(e, as)
	if err != nil {
		return err
	}
	o := backupOptions{fastCheckpoint: a.has("start-fast") && !a.has("no-start-fast"), method: string(backup.MethodAuto), pgdata: a.get("pg1-path")}
	if as != nil {
		o.fastCheckpoint = o.fastCheckpoint || as.Basebackup.FastCheckpoint
		if as.Basebackup.Method != "" {
			o.method = as.Basebackup.Method
		}
	}
	return backupTo(ctx, e, s, connect, o)
}

// dropInConnector reaches the database a drop-in backs up: --pg/PGVAULT_PG,
// else the site's nodes (with its pg_password_file).
func dropInConnector(e *env, as *agent.Site) (service.Connector, error) {
	if ci := e.c.String("pg"); ci != "" || as == nil {
		c, err := service.ConnectTo(ci, "")
		if err != nil {
			return nil, fmt.Errorf("--pg: %w", err)
		}
		return c, nil
	}
	return service.ConnectToNodes(as.PG, as.Secrets.PGPassword, "")
}

// pgbackrestRestoreOptions maps pgBackRest's restore options: --pg1-path
// (else PGDATA) is the target, --set the backup, --type and --target the
// recovery target.
func pgbackrestRestoreOptions(a foreignArgs) (restoreOptions, string, error) {
	o := restoreOptions{target: a.get("pg1-path"), delta: a.has("delta"), targetAction: a.get("target-action"),
		exclusive: a.has("target-exclusive"), timeline: a.get("target-timeline")}
	if o.target == "" {
		o.target = os.Getenv("PGDATA")
	}
	if o.target == "" {
		return o, "", usagef("pgbackrest restore: --pg1-path (or PGDATA) names the data directory to restore into")
	}
	if m := a.get("tablespace-map"); m != "" {
		o.tablespaceMap = []string{m}
	}
	target := a.get("target")
	switch t := a.get("type"); t {
	case "", "default":
	case "immediate":
		o.toImmediate = true
	case "time":
		o.toTime = target
	case "lsn":
		o.toLSN = target
	case "xid":
		o.toXID = target
	case "name":
		o.toName = target
	default:
		return o, "", usagef("pgbackrest restore: --type=%s: pgvault answers default, immediate, time, lsn, xid and name (a standby: `pgvault restore --standby`)", t)
	}
	if target != "" && o.toTime == "" && o.toLSN == "" && o.toXID == "" && o.toName == "" {
		return o, "", usagef("pgbackrest restore: --target needs --type=time, lsn, xid or name")
	}
	ref := a.get("set")
	if ref == "" {
		ref = "latest"
	}
	return o, ref, nil
}

// pgbackrestInfo prints pgBackRest's info: as text, or with
// --output=json in pgBackRest's JSON shape for the fields monitoring
// reads (status, backup list with labels, types, timestamps, sizes,
// archive start/stop, and the archive's min and max).
func pgbackrestInfo(ctx context.Context, e *env, s *service.Site, a foreignArgs) error {
	entries, err := s.List(ctx)
	if err != nil {
		return err
	}
	check, err := s.CheckWAL(ctx)
	if err != nil {
		return err
	}
	r, err := s.Open(ctx, service.Access{SkipIndex: true})
	if err != nil {
		return err
	}
	cipher := "none"
	if r.Config().Encrypted() {
		cipher = "aes-256-gcm"
	}
	r.Close()
	stanza := a.get("stanza")
	if stanza == "" {
		stanza = s.Name
	}
	info := pgbackrestStanzaInfo(stanza, cipher, entries, check)
	switch a.get("output") {
	case "json":
		enc := json.NewEncoder(e.c.App.Writer)
		return enc.Encode([]pbrStanza{info})
	case "", "text":
	default:
		return usagef("pgbackrest info: --output=%s: use text or json", a.get("output"))
	}
	w := e.c.App.Writer
	fmt.Fprintf(w, "stanza: %s\n    status: %s\n\n", info.Name, info.Status.Message)
	if len(info.Archive) > 0 {
		fmt.Fprintf(w, "    db (current)\n        wal archive min/max (%s): %s/%s\n", info.Archive[0].ID, info.Archive[0].Min, info.Archive[0].Max)
	}
	for _, b := range info.Backup {
		fmt.Fprintf(w, "\n        %s backup: %s\n", b.Type, b.Label)
		fmt.Fprintf(w, "            timestamp start/stop: %s / %s\n", unixUTC(b.Timestamp.Start), unixUTC(b.Timestamp.Stop))
		fmt.Fprintf(w, "            wal start/stop: %s / %s\n", b.Archive.Start, b.Archive.Stop)
		fmt.Fprintf(w, "            database size: %s, database backup size: %s\n", service.HumanBytes(b.Info.Size), service.HumanBytes(b.Info.Delta))
		fmt.Fprintf(w, "            repo1: backup size: %s\n", service.HumanBytes(b.Info.Repository.Delta))
	}
	return nil
}

// pbr* mirror pgBackRest's `info --output=json` document.
type pbrStanza struct {
	Name    string       `json:"name"`
	Status  pbrStatus    `json:"status"`
	Cipher  string       `json:"cipher"`
	DB      []pbrDB      `json:"db"`
	Archive []pbrArchive `json:"archive"`
	Backup  []pbrBackup  `json:"backup"`
	Repo    []pbrRepo    `json:"repo"`
}

type pbrStatus struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type pbrDBRef struct {
	ID      int `json:"id"`
	RepoKey int `json:"repo-key"`
}

type pbrDB struct {
	ID       int         `json:"id"`
	RepoKey  int         `json:"repo-key"`
	SystemID json.Number `json:"system-id"`
	Version  string      `json:"version"`
}

type pbrArchive struct {
	Database pbrDBRef `json:"database"`
	ID       string   `json:"id"`
	Min      string   `json:"min"`
	Max      string   `json:"max"`
}

type pbrBackup struct {
	Label     string   `json:"label"`
	Type      string   `json:"type"`
	Database  pbrDBRef `json:"database"`
	Error     bool     `json:"error"`
	Prior     *string  `json:"prior"`
	Reference []string `json:"reference"`
	Archive   struct {
		Start string `json:"start"`
		Stop  string `json:"stop"`
	} `json:"archive"`
	LSN struct {
		Start string `json:"start"`
		Stop  string `json:"stop"`
	} `json:"lsn"`
	Timestamp struct {
		Start int64 `json:"start"`
		Stop  int64 `json:"stop"`
	} `json:"timestamp"`
	Info struct {
		Size       int64 `json:"size"`
		Delta      int64 `json:"delta"`
		Repository struct {
			Size  int64 `json:"size"`
			Delta int64 `json:"delta"`
		} `json:"repository"`
	} `json:"info"`
}

type pbrRepo struct {
	Key    int       `json:"key"`
	Cipher string    `json:"cipher"`
	Status pbrStatus `json:"status"`
}

// pgbackrestStanzaInfo builds the info document. pgvault's backups are
// full: each is its own "full" entry, labelled by its ID (`--set` takes
// it back). Sizes: info.size is the cluster's, info.delta and the
// repository's the new data the backup stored after deduplication. The
// archive's min and max are the first segment a restore of the oldest
// backup needs and the newest stored.
func pgbackrestStanzaInfo(stanza, cipher string, entries []service.ListEntry, check *service.WALCheckReport) pbrStanza {
	ref := pbrDBRef{ID: 1, RepoKey: 1}
	st := pbrStanza{Name: stanza, Status: pbrStatus{Code: 0, Message: "ok"}, Cipher: cipher,
		DB: []pbrDB{}, Archive: []pbrArchive{}, Backup: []pbrBackup{},
		Repo: []pbrRepo{{Key: 1, Cipher: cipher, Status: pbrStatus{Code: 0, Message: "ok"}}}}
	if len(entries) == 0 {
		st.Status = pbrStatus{Code: 2, Message: "no valid backups"}
		st.Repo[0].Status = st.Status
		return st
	}
	last := entries[len(entries)-1]
	version := fmt.Sprint(pg.Major(last.ServerVersion))
	st.DB = append(st.DB, pbrDB{ID: 1, RepoKey: 1, SystemID: json.Number(last.SystemID), Version: version})
	if check != nil && check.To != "" {
		min := check.From
		if min == "" {
			min = entries[0].StartWAL
		}
		st.Archive = append(st.Archive, pbrArchive{Database: ref, ID: version + "-1", Min: min, Max: check.To})
	}
	for _, l := range entries {
		b := pbrBackup{Label: l.ID, Type: "full", Database: ref}
		b.Archive.Start, b.Archive.Stop = l.StartWAL, l.StopWAL
		b.LSN.Start, b.LSN.Stop = l.StartLSN, l.StopLSN
		b.Timestamp.Start, b.Timestamp.Stop = l.StartTime.Unix(), l.StopTime.Unix()
		b.Info.Size, b.Info.Delta = l.Bytes, l.StoredBytes
		b.Info.Repository.Size, b.Info.Repository.Delta = l.StoredBytes, l.StoredBytes
		st.Backup = append(st.Backup, b)
	}
	return st
}

func unixUTC(sec int64) string { return time.Unix(sec, 0).UTC().Format("2006-01-02 15:04:05") }

package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/fs/chunkread"
	"github.com/pgvault/pgvault/fs/verify"
	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/internal/pgdump"
)

// DumpOptions configure Dump.
type DumpOptions struct {
	// Ref names the backup ("" or "latest": the newest that serves the
	// target).
	Ref string
	// Recovery holds the target and timeline; the action is Dump's.
	Recovery wal.RecoveryConfig
	// What is dumped: Globals (pg_dumpall --globals-only), else Tables of
	// DB (DB "": the one database holding them), else the whole DB.
	Globals bool
	DB      string
	Tables  []pgdump.Table
	// How: pg_dump's format and parts.
	Format     pgdump.Format
	SchemaOnly bool
	DataOnly   bool
	// File is where the dump goes ("": Out).
	File string
	Out  io.Writer
	// PGBin is the folder of the backup's major's server programs, PGDump
	// that of pg_dump ("": found on this host, as verify --boot does).
	PGBin, PGDump string
	// Owner is the OS user PostgreSQL runs as, DBUser the role pg_dump
	// connects as ("": Owner).
	Owner, DBUser string
	Timeout       time.Duration
	CacheSize     int64
	Progress      func(phase string)
}

// DumpReport is what Dump wrote.
type DumpReport struct {
	ID      string     `json:"id"`
	Target  wal.Target `json:"target"`
	Reached string     `json:"reached"` // how recovery ended: paused (at the target) or promoted
	// What is "tables", "database" or "globals".
	What     string        `json:"what"`
	Database string        `json:"database,omitempty"`
	Tables   []DumpedTable `json:"tables,omitempty"`
	Format   string        `json:"format"`
	Output   string        `json:"output"` // the file, or "-" for standard output
	Bytes    int64         `json:"bytes"`
	PGDump   string        `json:"pg_dump"`
	// Phases are seconds: mount, start, recovery, dump, count, stop.
	Phases  map[string]float64 `json:"phases"`
	Seconds float64            `json:"seconds"`
}

// DumpedTable is one table of a dump.
type DumpedTable struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // pg_class.relkind
	// Rows is nil for a schema-only dump and for views.
	Rows *int64 `json:"rows,omitempty"`
	// Bytes is its size in the backup: heap, TOAST and indexes.
	Bytes int64 `json:"bytes"`
}

// Dump starts PostgreSQL on a private instant mount of a backup, recovered
// to a point in time, and runs pg_dump (or pg_dumpall) against it: one
// table back from any point in time without restoring the cluster. The
// server listens on a private socket only, and everything is stopped and
// removed afterwards, on failure and on cancellation too.
func (s *Site) Dump(ctx context.Context, o DumpOptions) (*DumpReport, error) {
	started := time.Now()
	owner, err := bootHost(o.Owner)
	if err != nil {
		return nil, err
	}
	r, err := s.openCached(ctx, o.CacheSize, "dump")
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cat, err := LoadCatalog(ctx, r)
	if err != nil {
		return nil, err
	}
	// Paused at a target (read-only, no new timeline); at the end of the
	// WAL recovery promotes, inside the throwaway view.
	rc := o.Recovery
	if !rc.Target.IsEnd() {
		rc.Action = wal.ActionPause
	}
	plan, snap, err := cat.PlanRestore(backup.PlanInput{Ref: o.Ref, Target: rc.Target, Timeline: rc.Timeline})
	if err != nil {
		return nil, err
	}
	major := pg.Major(plan.Backup.Info.ServerVersion)
	bin, err := verify.FindPGBin(o.PGBin, major)
	if err != nil {
		return nil, err
	}
	// pg_dump is checked before anything starts: one too old for the
	// server would refuse only after the recovery.
	name := "pg_dump"
	if o.Globals {
		name = "pg_dumpall"
	}
	prog, err := pgdump.Find(ctx, name, o.PGDump, major, func(n string) (string, bool) { return verify.FindClient(bin, n) })
	if err != nil {
		return nil, err
	}
	rep := &DumpReport{ID: snap.ID, Target: rc.Target, Format: string(o.Format), Output: o.File, PGDump: prog.Path, Phases: map[string]float64{}}
	if o.File == "" {
		rep.Output = "-"
	}
	_, statErr := os.Lstat(o.File)
	newFile := o.File != "" && errors.Is(statErr, fs.ErrNotExist)

	var dumpErr error
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	br, err := verify.Boot(ctx, r, snap, verify.BootOptions{
		Owner: owner, PGBin: bin, Recovery: rc, SegmentSize: plan.SegmentSize, DBUser: o.DBUser,
		Settings: []wal.Setting{{Name: "archive_mode", Value: "off"}, {Name: "hot_standby", Value: "on"}},
		AmCheck:  "off", Timeout: o.Timeout, StopImmediate: true, Prefetcher: chunkread.NewPrefetcher(bg, r, 8, 16), Logger: s.log(), Progress: o.Progress,
		AtTarget: func(ctx context.Context, conninfo string) error {
			if o.Progress != nil {
				o.Progress("dump")
			}
			dumpErr = s.dumpAtTarget(ctx, conninfo, prog, o, rep)
			return dumpErr
		},
	})
	if dumpErr == nil && err == nil && len(br.Problems) > 0 {
		err = fmt.Errorf("dump of backup %s: %s; server log: %s", ShortID(snap.ID), br.Problems[0], strings.ReplaceAll(strings.TrimSpace(br.LogTail), "\n", " | "))
	}
	if dumpErr != nil {
		err = dumpErr
	}
	if ctx.Err() != nil {
		err = ctx.Err() // what failed was stopped by the interruption
	}
	if err != nil {
		if newFile {
			os.RemoveAll(o.File) // a partial dump must not pass for a whole one
		}
		return nil, err
	}
	for k, v := range br.Phases {
		rep.Phases[k] = v
	}
	rep.Reached = br.Reached
	if o.File != "" {
		rep.Bytes = diskSize(o.File)
	}
	rep.Seconds = time.Since(started).Seconds()
	return rep, nil
}

// dumpAtTarget runs the dump against the recovered server.
func (s *Site) dumpAtTarget(ctx context.Context, conninfo string, prog pgdump.Program, o DumpOptions, rep *DumpReport) error {
	t := time.Now()
	if o.Globals {
		rep.What = "globals"
		n, err := pgdump.DumpGlobals(ctx, prog, conninfo, o.File, o.Out)
		rep.Bytes, rep.Phases["dump"] = n, time.Since(t).Seconds()
		return err
	}
	db := o.DB
	var found []pgdump.Found
	if len(o.Tables) > 0 {
		var err error
		if db, found, err = pgdump.Locate(ctx, conninfo, db, o.Tables); err != nil {
			return fmt.Errorf("%w (backup %s at %s)", err, ShortID(rep.ID), rep.Target)
		}
		rep.What = "tables"
	} else {
		dbs, err := pgdump.Databases(ctx, conninfo)
		if err != nil {
			return err
		}
		if !slices.Contains(dbs, db) {
			return fmt.Errorf("%w: no database %q in backup %s at %s; its databases are %s", pgdump.ErrNoSuchTable, db, ShortID(rep.ID), rep.Target, strings.Join(dbs, ", "))
		}
		rep.What = "database"
	}
	rep.Database = db
	n, err := pgdump.Dump(ctx, prog, pgdump.Options{Conninfo: conninfo, DB: db, Tables: o.Tables, Format: o.Format,
		SchemaOnly: o.SchemaOnly, DataOnly: o.DataOnly, File: o.File, Out: o.Out})
	rep.Bytes, rep.Phases["dump"] = n, time.Since(t).Seconds()
	if err != nil {
		return err
	}
	t = time.Now()
	for _, f := range found {
		dt := DumpedTable{Name: f.Table.String(), Kind: f.Kind, Bytes: f.Bytes}
		if !o.SchemaOnly && f.Kind != "v" && f.Kind != "S" {
			rows, err := pgdump.CountRows(ctx, conninfo, db, f.Table)
			if err != nil {
				return err
			}
			dt.Rows = &rows
		}
		rep.Tables = append(rep.Tables, dt)
	}
	rep.Phases["count"] = time.Since(t).Seconds()
	return nil
}

// diskSize is the size of a file, or of the files under a directory.
func diskSize(p string) int64 {
	var n int64
	filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

package overlay

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgvault/pgvault/internal/pg/wal"
)

// PrepareOptions say how Prepare readies a snapshot's data directory for
// PostgreSQL.
type PrepareOptions struct {
	// Recovery, if set, configures archive recovery: recovery.signal plus
	// its settings in postgresql.auto.conf. Nil leaves recovery alone.
	Recovery *wal.RecoveryConfig
	// Note heads the settings pgvault writes (a comment line).
	Note string
	// Owner owns the files Prepare creates.
	Owner Owner
	// Settings are more settings to append to postgresql.auto.conf (e.g.
	// archive_mode = off, so that a restored copy never archives into the
	// original's archive).
	Settings []wal.Setting
}

// PrepareResult says what Prepare changed.
type PrepareResult struct {
	Removed  []string `json:"removed"`
	Created  []string `json:"created"`
	Settings []string `json:"settings"`
	// InPlaceTablespaces is set when tablespaces are shown as folders in
	// pg_tblspc (allow_in_place_tablespaces = on).
	InPlaceTablespaces bool `json:"in_place_tablespaces"`
	// ControlState is pg_control's cluster state before and after, when
	// Prepare changed it ("in production -> shut down in recovery").
	ControlState string `json:"control_state,omitempty"`
}

// Prepare makes the overlay's data directory ready to start, once, on a
// fresh scratch folder:
//
//   - postmaster.pid and postmaster.opts are removed (a backup of a running
//     server holds neither, a copy of a stopped one may);
//   - tablespace_map is removed, and allow_in_place_tablespaces turned on
//     when the snapshot has tablespaces: they are folders at
//     pg_tblspc/<oid> inside the view, which PostgreSQL accepts as
//     in-place tablespaces, whereas with tablespace_map it would replace
//     them with links to the original server's locations;
//   - with Recovery, standby.signal is removed, recovery.signal created and
//     the recovery settings written to postgresql.auto.conf (earlier
//     recovery settings there are commented out);
//   - in a base backup (with backup_label), pg_control's state becomes
//     "shut down in recovery" (see markDurable).
//
// Everything is synced before Prepare returns.
func (ov *Overlay) Prepare(ctx context.Context, opts PrepareOptions) (*PrepareResult, error) {
	res := &PrepareResult{}
	remove := func(p string) error {
		if !ov.Exists(ctx, p) {
			return nil
		}
		res.Removed = append(res.Removed, p)
		return ov.RemovePath(ctx, p)
	}
	for _, p := range []string{"postmaster.pid", "postmaster.opts", "tablespace_map"} {
		if err := remove(p); err != nil {
			return nil, err
		}
	}
	settings := append([]wal.Setting(nil), opts.Settings...)
	if ts, err := ov.tablespaceDirs(ctx); err != nil {
		return nil, err
	} else if len(ts) > 0 {
		res.InPlaceTablespaces = true
		settings = append(settings, wal.Setting{Name: "allow_in_place_tablespaces", Value: "on"})
	}
	var conf []byte
	if ov.Exists(ctx, "postgresql.auto.conf") {
		old, err := ov.ReadFile(ctx, "postgresql.auto.conf")
		if err != nil {
			return nil, err
		}
		conf = old
	}
	if opts.Recovery != nil {
		if err := opts.Recovery.Validate(); err != nil {
			return nil, err
		}
		for _, p := range []string{wal.StandbySignalFile, wal.RecoverySignalFile} {
			if err := remove(p); err != nil {
				return nil, err
			}
		}
		sig := opts.Recovery.SignalFile()
		if err := ov.WriteFile(ctx, sig, nil, 0o600, opts.Owner); err != nil {
			return nil, err
		}
		res.Created = append(res.Created, sig)
		conf = wal.ApplyRecoveryConfig(conf, *opts.Recovery, opts.Note)
		for _, s := range opts.Recovery.Settings() {
			res.Settings = append(res.Settings, s.String())
		}
	}
	if len(settings) > 0 {
		var b strings.Builder
		b.Write(conf)
		if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") {
			b.WriteByte('\n')
		}
		if opts.Recovery == nil && opts.Note != "" {
			b.WriteString("# " + opts.Note + "\n")
		}
		for _, s := range settings {
			b.WriteString(s.String() + "\n")
			res.Settings = append(res.Settings, s.String())
		}
		conf = []byte(b.String())
	}
	if opts.Recovery != nil || len(settings) > 0 {
		if err := ov.WriteFile(ctx, "postgresql.auto.conf", conf, 0o600, opts.Owner); err != nil {
			return nil, err
		}
	}
	if err := ov.markDurable(ctx, res); err != nil {
		return nil, err
	}
	if err := ov.Sync(ctx); err != nil {
		return nil, fmt.Errorf("prepare data directory: %w", err)
	}
	return res, nil
}

// markDurable sets pg_control's state to "shut down in recovery" when it
// says the server was running (a backup of a primary, or of a standby),
// so that PostgreSQL's first start on the view skips its fsync of every
// file of the data directory. That walk (SyncDataDirectory) exists to
// make durable what a crashed server wrote but never synced; in a fresh
// view nothing was written by a server, the snapshot's content is the
// repository's and Prepare syncs its own changes before it returns.
// Through FUSE the walk costs three round trips per file (open, fsync,
// open again): 0.15-0.23 s of a 0.35 s start at pgbench scale 100.
// PostgreSQL writes its own state into pg_control as soon as recovery
// begins, so a later start after a crash walks the directory as always.
// The state changes nothing else with a backup_label present: recovery
// starts from the label's checkpoint either way, and a standby's backup
// needs one of the two recovery states, which this is.
func (ov *Overlay) markDurable(ctx context.Context, res *PrepareResult) error {
	if !ov.Exists(ctx, "backup_label") || !ov.Exists(ctx, wal.ControlFilePath) {
		return nil
	}
	raw, err := ov.ReadFile(ctx, wal.ControlFilePath)
	if err != nil {
		return err
	}
	cf, err := wal.ParseControlFile(raw)
	if err != nil {
		// Leave a file this version cannot read as it is; PostgreSQL
		// judges it, and at worst walks the directory.
		return nil
	}
	old := cf.State()
	if old != wal.DBInProduction && old != wal.DBInArchiveRecovery {
		return nil
	}
	if err := ov.WriteFile(ctx, wal.ControlFilePath, cf.WithState(wal.DBShutdownedInRecovery), 0o600, Owner{}); err != nil {
		return err
	}
	res.ControlState = old.String() + " -> " + wal.DBShutdownedInRecovery.String()
	return nil
}

// tablespaceDirs lists the tablespace folders of the view
// (pg_tblspc/<oid> that are directories).
func (ov *Overlay) tablespaceDirs(ctx context.Context) ([]string, error) {
	d, err := ov.walkPath(ctx, "pg_tblspc")
	if err != nil {
		return nil, nil
	}
	ents, err := ov.List(ctx, d)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.Kind == KindDir && strings.Trim(e.Name, "0123456789") == "" {
			out = append(out, "pg_tblspc/"+e.Name)
		}
	}
	return out, nil
}

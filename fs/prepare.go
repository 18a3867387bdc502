package fs

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgvault/pgvault/stream/wal"
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
//     recovery settings there are commented out).
//
// Everything is synced before Prepare returns.
func (ov *Overlay) Prepare(ctx context.Context, opts PrepareOptions) (*PrepareResult, error) {
	res := &PrepareResult{}
	remove := func(p string) error {
		if !ov.Exists(ctx, p) {
			return nil
		}
		res.Removed = append(res.Removed, p)
		return ov.Remove(ctx, p)
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
	if err := ov.Sync(ctx); err != nil {
		return nil, fmt.Errorf("prepare data directory: %w", err)
	}
	return res, nil
}

// tablespaceDirs lists the tablespace folders of the view
// (pg_tblspc/<oid> that are directories).
func (ov *Overlay) tablespaceDirs(ctx context.Context) ([]string, error) {
	d, err := ov.walkPath(ctx, "pg_tblspc")
	if err != nil {
		return nil, nil
	}
	ents, err := ov.list(ctx, d)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.Kind == kindDir && strings.Trim(e.Name, "0123456789") == "" {
			out = append(out, "pg_tblspc/"+e.Name)
		}
	}
	return out, nil
}

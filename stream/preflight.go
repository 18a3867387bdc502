package stream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgvault/pgvault/internal/pg"
)

// FindingStatus is how a preflight finding turned out.
type FindingStatus string

// Finding statuses. Only FindingError makes a server not ready.
const (
	FindingOK      FindingStatus = "ok"
	FindingWarning FindingStatus = "warning"
	FindingError   FindingStatus = "error"
)

// Finding is one preflight check's outcome: the setting or object checked,
// what was found and, unless it is fine, what to do about it.
type Finding struct {
	Setting string        `json:"setting"`
	Status  FindingStatus `json:"status"`
	Value   string        `json:"value,omitempty"`
	Message string        `json:"message"`
	Fix     string        `json:"fix,omitempty"`
}

// PreflightReport is the outcome of Preflight (and ProbeReplication,
// added with Add).
type PreflightReport struct {
	// Ready is set when no finding is an error.
	Ready         bool      `json:"ready"`
	ServerVersion string    `json:"server_version"`
	Role          string    `json:"role"`
	Slot          string    `json:"slot"`
	Findings      []Finding `json:"findings"`
}

// Add appends a finding and updates Ready.
func (r *PreflightReport) Add(f Finding) {
	r.Findings = append(r.Findings, f)
	r.Ready = r.Ready && f.Status != FindingError
}

// Errors returns the findings with FindingError.
func (r *PreflightReport) Errors() []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Status == FindingError {
			out = append(out, f)
		}
	}
	return out
}

// PreflightOptions tune Preflight.
type PreflightOptions struct {
	// Slot is the physical replication slot the streamer uses; "" means
	// DefaultSlot.
	Slot string
	// MinWALSenders is the max_wal_senders below which Preflight warns;
	// 0 means 2 (the streamer plus a base backup).
	MinWALSenders int
}

// DefaultSlot is the replication slot `pgvault wal stream` uses unless told
// otherwise.
const DefaultSlot = "pgvault"

// minServerVersion is the oldest PostgreSQL pgvault supports (13).
const minServerVersion = 130000

// Preflight checks, over a normal SQL connection, whether the server conn
// is connected to is set up for pgvault to stream WAL from it: the server
// version, wal_level, max_wal_senders (and free senders),
// max_replication_slots (and a free one when the slot does not exist yet),
// the connected role's REPLICATION attribute, the slot's state (missing is
// fine: `wal stream` creates it; logical, busy or invalidated is not),
// max_slot_wal_keep_size (unbounded fills the disk when the streamer
// stops; bounded lets PostgreSQL invalidate the slot and lose WAL: either
// way a warning), and archive_command when archive_mode is on.
//
// It only reads: nothing on the server changes. An error means a query
// failed (the connection broke); what is wrong with the server is in the
// report's findings. Run ProbeReplication as well to prove that a
// replication connection is allowed.
func Preflight(ctx context.Context, conn *pgx.Conn, opts PreflightOptions) (*PreflightReport, error) {
	if opts.Slot == "" {
		opts.Slot = DefaultSlot
	}
	if opts.MinWALSenders <= 0 {
		opts.MinWALSenders = 2
	}
	rep := &PreflightReport{Ready: true, Slot: opts.Slot}
	var (
		versionNum           int
		walLevel             string
		maxSenders, maxSlots int
		keepSize             int64
		archiveMode          string
		role                 string
		super, replication   bool
	)
	err := conn.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('server_version_num')::int,
		current_setting('wal_level'), current_setting('max_wal_senders')::int, current_setting('max_replication_slots')::int,
		current_setting('archive_mode'),
		current_user, r.rolsuper, r.rolreplication
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(
		&rep.ServerVersion, &versionNum, &walLevel, &maxSenders, &maxSlots,
		&archiveMode, &role, &super, &replication)
	if err != nil {
		return nil, fmt.Errorf("preflight: read server settings: %w", err)
	}
	rep.Role = role

	// server version
	switch ok, msg := pg.Supported(rep.ServerVersion); {
	case !ok && versionNum < minServerVersion:
		rep.Add(Finding{Setting: "server_version", Status: FindingError, Value: rep.ServerVersion, Message: msg,
			Fix: fmt.Sprintf("upgrade PostgreSQL to %d or later", pg.OldestStreamMajor)})
	case !ok:
		rep.Add(Finding{Setting: "server_version", Status: FindingError, Value: rep.ServerVersion, Message: msg,
			Fix: "upgrade pgvault to a release that supports this major"})
	default:
		rep.Add(Finding{Setting: "server_version", Status: FindingOK, Value: rep.ServerVersion, Message: msg})
	}

	// wal_level
	if walLevel == "replica" || walLevel == "logical" {
		rep.Add(Finding{Setting: "wal_level", Status: FindingOK, Value: walLevel, Message: "wal_level = " + walLevel})
	} else {
		rep.Add(Finding{Setting: "wal_level", Status: FindingError, Value: walLevel,
			Message: fmt.Sprintf("wal_level = %s: WAL lacks what base backups and streaming need", walLevel),
			Fix:     "ALTER SYSTEM SET wal_level = replica; then restart PostgreSQL"})
	}

	// max_wal_senders
	var senders int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_replication`).Scan(&senders); err != nil {
		return nil, fmt.Errorf("preflight: count WAL senders: %w", err)
	}
	sf := Finding{Setting: "max_wal_senders", Value: strconv.Itoa(maxSenders)}
	switch free := maxSenders - senders; {
	case maxSenders == 0:
		sf.Status, sf.Message = FindingError, "max_wal_senders = 0: no replication connection is possible"
		sf.Fix = fmt.Sprintf("ALTER SYSTEM SET max_wal_senders = %d; then restart PostgreSQL", max(opts.MinWALSenders, 4))
	case free <= 0:
		sf.Status = FindingError
		sf.Message = fmt.Sprintf("max_wal_senders = %d and all %d are in use: the streamer cannot connect", maxSenders, senders)
		sf.Fix = fmt.Sprintf("stop a replication client or ALTER SYSTEM SET max_wal_senders = %d; then restart PostgreSQL", maxSenders+opts.MinWALSenders)
	case maxSenders < opts.MinWALSenders:
		sf.Status = FindingWarning
		sf.Message = fmt.Sprintf("max_wal_senders = %d: the streamer and a base backup need %d at once", maxSenders, opts.MinWALSenders)
		sf.Fix = fmt.Sprintf("ALTER SYSTEM SET max_wal_senders = %d; then restart PostgreSQL", max(opts.MinWALSenders, 4))
	case free < opts.MinWALSenders:
		sf.Status = FindingWarning
		sf.Message = fmt.Sprintf("max_wal_senders = %d with %d in use: only %d free, the streamer and a base backup need %d", maxSenders, senders, free, opts.MinWALSenders)
		sf.Fix = fmt.Sprintf("ALTER SYSTEM SET max_wal_senders = %d; then restart PostgreSQL", maxSenders+opts.MinWALSenders)
	default:
		sf.Status = FindingOK
		sf.Message = fmt.Sprintf("max_wal_senders = %d, %d in use", maxSenders, senders)
	}
	rep.Add(sf)

	// role
	rf := Finding{Setting: "role", Value: role}
	switch {
	case super:
		rf.Status, rf.Message = FindingOK, fmt.Sprintf("role %q is a superuser", role)
	case replication:
		rf.Status, rf.Message = FindingOK, fmt.Sprintf("role %q has the REPLICATION attribute", role)
	default:
		rf.Status = FindingError
		rf.Message = fmt.Sprintf("role %q has neither REPLICATION nor SUPERUSER: it may not stream WAL or take base backups", role)
		rf.Fix = fmt.Sprintf("ALTER ROLE %s REPLICATION; (as a superuser), or connect as a role that has it", sqlIdent(role))
	}
	rep.Add(rf)

	// the slot, and max_replication_slots
	slotFinding, slotExists, err := checkSlot(ctx, conn, opts.Slot)
	if err != nil {
		return nil, err
	}
	var usedSlots int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots`).Scan(&usedSlots); err != nil {
		return nil, fmt.Errorf("preflight: count replication slots: %w", err)
	}
	mf := Finding{Setting: "max_replication_slots", Value: strconv.Itoa(maxSlots)}
	switch {
	case maxSlots == 0:
		mf.Status, mf.Message = FindingError, "max_replication_slots = 0: the streamer needs a slot so PostgreSQL keeps WAL it has not received"
		mf.Fix = "ALTER SYSTEM SET max_replication_slots = 10; then restart PostgreSQL"
	case !slotExists && usedSlots >= maxSlots:
		mf.Status = FindingError
		mf.Message = fmt.Sprintf("max_replication_slots = %d and all are taken: `wal stream` cannot create slot %q", maxSlots, opts.Slot)
		mf.Fix = fmt.Sprintf("drop an unused slot (SELECT pg_drop_replication_slot('name')) or ALTER SYSTEM SET max_replication_slots = %d; then restart PostgreSQL", maxSlots+2)
	default:
		mf.Status, mf.Message = FindingOK, fmt.Sprintf("max_replication_slots = %d, %d in use", maxSlots, usedSlots)
	}
	rep.Add(mf)
	rep.Add(slotFinding)

	// max_slot_wal_keep_size (MB; -1 unbounded)
	if err := conn.QueryRow(ctx, `SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size'`).Scan(&keepSize); err != nil {
		return nil, fmt.Errorf("preflight: read max_slot_wal_keep_size: %w", err)
	}
	if keepSize < 0 {
		rep.Add(Finding{Setting: "max_slot_wal_keep_size", Status: FindingWarning, Value: "-1",
			Message: "max_slot_wal_keep_size = -1 (unbounded): if the streamer stops, its slot keeps all WAL and can fill the disk",
			Fix:     "monitor pg_wal's size and the slot's lag, or ALTER SYSTEM SET max_slot_wal_keep_size = '<a size pg_wal can hold>'; SELECT pg_reload_conf(); (a slot behind by more is invalidated)"})
	} else {
		rep.Add(Finding{Setting: "max_slot_wal_keep_size", Status: FindingWarning, Value: fmt.Sprintf("%dMB", keepSize),
			Message: fmt.Sprintf("max_slot_wal_keep_size = %dMB: if the streamer falls that far behind, PostgreSQL invalidates its slot and the WAL in between is lost to the archive", keepSize),
			Fix:     "keep the streamer running (watch the slot's safe_wal_size); after an invalidation, recreate the slot and take a new base backup"})
	}

	// archive_mode / archive_command
	if archiveMode != "off" {
		rep.Add(checkArchiver(ctx, conn, archiveMode))
	}
	return rep, nil
}

// checkSlot reports on replication slot name, and whether it exists.
func checkSlot(ctx context.Context, conn *pgx.Conn, name string) (Finding, bool, error) {
	f := Finding{Setting: "slot", Value: name}
	var (
		slotType, walStatus, restart string
		active                       bool
		pid                          int
	)
	err := conn.QueryRow(ctx, `SELECT slot_type, active, coalesce(active_pid, 0), coalesce(wal_status, ''), coalesce(restart_lsn::text, '')
		FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&slotType, &active, &pid, &walStatus, &restart)
	if errors.Is(err, pgx.ErrNoRows) {
		f.Status = FindingOK
		f.Message = fmt.Sprintf("replication slot %q does not exist yet: `pgvault wal stream` creates it", name)
		return f, false, nil
	}
	if err != nil {
		return f, false, fmt.Errorf("preflight: read replication slot %q: %w", name, err)
	}
	drop := fmt.Sprintf("SELECT pg_drop_replication_slot(%s);", sqlLiteral(name))
	switch {
	case slotType != "physical":
		f.Status = FindingError
		f.Message = fmt.Sprintf("replication slot %q is a %s slot; the streamer needs a physical one", name, slotType)
		f.Fix = fmt.Sprintf("use another slot name (--slot), or %s if nothing uses it", drop)
	case walStatus == "lost":
		f.Status = FindingError
		f.Message = fmt.Sprintf("replication slot %q was invalidated by PostgreSQL (wal_status lost, max_slot_wal_keep_size exceeded): the WAL it held was removed before it was archived", name)
		f.Fix = fmt.Sprintf("%s then let `pgvault wal stream` create it again, and take a new base backup (`pgvault backup`): point-in-time recovery cannot cross the lost WAL", drop)
	case active:
		f.Status = FindingWarning
		f.Message = fmt.Sprintf("replication slot %q is in use by process %d (restart_lsn %s): another streamer is running", name, pid, restart)
		f.Fix = "stop the other streamer before starting one on this slot, or use another --slot"
	case walStatus == "unreserved":
		f.Status = FindingWarning
		f.Message = fmt.Sprintf("replication slot %q (restart_lsn %s) is about to be invalidated: PostgreSQL may remove the WAL it needs at the next checkpoint", name, restart)
		f.Fix = "start `pgvault wal stream` now so the slot catches up, or raise max_slot_wal_keep_size"
	default:
		f.Status = FindingOK
		f.Message = fmt.Sprintf("replication slot %q is physical, inactive, restart_lsn %s, wal_status %s", name, restart, walStatus)
	}
	return f, true, nil
}

// checkArchiver reports on archive_command when archive_mode is on.
func checkArchiver(ctx context.Context, conn *pgx.Conn, mode string) Finding {
	f := Finding{Setting: "archive_command"}
	// Settings a role may not read (GUC_SUPERUSER_ONLY) are absent from
	// pg_settings for it: unknown, not empty.
	var command, library string
	known := conn.QueryRow(ctx, `SELECT setting FROM pg_settings WHERE name = 'archive_command'`).Scan(&command) == nil
	_ = conn.QueryRow(ctx, `SELECT coalesce((SELECT setting FROM pg_settings WHERE name = 'archive_library'), '')`).Scan(&library)
	f.Value = command
	if known && strings.TrimSpace(command) == "" && library == "" {
		f.Status = FindingWarning
		f.Message = fmt.Sprintf("archive_mode = %s but archive_command is empty: completed WAL segments pile up in pg_wal", mode)
		f.Fix = "set archive_command = 'pgvault wal push %p' (with PGVAULT_REPO and the password file in its environment) or archive_mode = off when `wal stream` archives"
		return f
	}
	var (
		lastFailedWAL          string
		failing                bool
		failedCount, archivedN int64
	)
	err := conn.QueryRow(ctx, `SELECT archived_count, failed_count, coalesce(last_failed_wal, ''),
		coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false)
		FROM pg_stat_archiver`).Scan(&archivedN, &failedCount, &lastFailedWAL, &failing)
	if err == nil && failing {
		f.Status = FindingWarning
		f.Message = fmt.Sprintf("archive_command is failing: the last attempt, for %s, failed (%d failures so far); WAL is not being archived", lastFailedWAL, failedCount)
		f.Fix = "read the PostgreSQL server log for the archive_command error and fix it"
		return f
	}
	f.Status = FindingOK
	f.Message = fmt.Sprintf("archive_mode = %s, %d files archived", mode, archivedN)
	return f
}

// ProbeReplication opens a physical replication connection with a copy of
// cfg (replication=true set), runs IDENTIFY_SYSTEM and closes it, proving
// that pg_hba.conf lets the role replicate from here, that the role may,
// and that a WAL sender is free. It never fails: the outcome is the
// finding (setting "replication_connection"); the system is the server's
// IDENTIFY_SYSTEM answer when the probe succeeded.
func ProbeReplication(ctx context.Context, cfg *pgconn.Config) (Finding, *pglogrepl.IdentifySystemResult) {
	c := cfg.Copy()
	if c.RuntimeParams == nil {
		c.RuntimeParams = map[string]string{}
	}
	c.RuntimeParams["replication"] = "true"
	if c.RuntimeParams["application_name"] == "" {
		c.RuntimeParams["application_name"] = "pgvault preflight"
	}
	f := Finding{Setting: "replication_connection", Value: fmt.Sprintf("%s port %d as %s", c.Host, c.Port, c.User)}
	conn, err := pgconn.ConnectConfig(ctx, c)
	if err != nil {
		f.Status = FindingError
		f.Message, f.Fix = explainReplicationError(err, c)
		return f, nil
	}
	defer conn.Close(context.WithoutCancel(ctx))
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		f.Status = FindingError
		f.Message, f.Fix = explainReplicationError(err, c)
		return f, nil
	}
	f.Status = FindingOK
	f.Message = fmt.Sprintf("replication connection works: system %s, timeline %d, WAL at %s", sys.SystemID, sys.Timeline, sys.XLogPos)
	return f, &sys
}

// explainReplicationError says why a replication connection failed and
// what to change.
func explainReplicationError(err error, cfg *pgconn.Config) (msg, fix string) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "28000" && strings.Contains(pgErr.Message, "pg_hba.conf"):
			return "pg_hba.conf refuses the replication connection: " + pgErr.Message,
				fmt.Sprintf("add `host replication %s <this host's address>/32 scram-sha-256` to pg_hba.conf, then SELECT pg_reload_conf();", cfg.User)
		case pgErr.Code == "28P01":
			return "the password was rejected: " + pgErr.Message, "check PGPASSWORD, ~/.pgpass or password= in --pg"
		case pgErr.Code == "42501" || strings.Contains(pgErr.Message, "replication"):
			if strings.Contains(pgErr.Message, "max_wal_senders") || pgErr.Code == "53300" {
				break
			}
			return "the role may not start replication: " + pgErr.Message,
				fmt.Sprintf("ALTER ROLE %s REPLICATION; (as a superuser), or connect as a role that has it", sqlIdent(cfg.User))
		}
		switch {
		case pgErr.Code == "53300" && strings.Contains(pgErr.Message, "max_wal_senders"):
			return "no free WAL sender: " + pgErr.Message,
				"stop another replication client, or raise max_wal_senders and restart PostgreSQL"
		case pgErr.Code == "53300":
			return "no free connection slot: " + pgErr.Message, "raise max_connections or close idle sessions"
		case strings.Contains(pgErr.Message, "wal_level"):
			return pgErr.Message, "ALTER SYSTEM SET wal_level = replica; then restart PostgreSQL"
		}
		return fmt.Sprintf("%s (SQLSTATE %s)", pgErr.Message, pgErr.Code), "see the PostgreSQL server log"
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused", "check that PostgreSQL listens on that host and port (listen_addresses, port)"
	case errors.Is(err, context.DeadlineExceeded):
		return "connection timed out", "check the host, port and firewalls"
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return "cannot connect: " + opErr.Err.Error(), "check the host and port in --pg"
	}
	return err.Error(), "check --pg and the PostgreSQL server log"
}

func sqlIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func sqlLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

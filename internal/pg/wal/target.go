package wal

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
)

// ErrInvalidTarget is wrapped by every error about a recovery target, a
// target action or a target timeline that PostgreSQL would not accept.
var ErrInvalidTarget = errors.New("invalid recovery target")

// TargetKind says where point-in-time recovery stops.
type TargetKind int

// The recovery targets PostgreSQL knows (recovery_target_*), plus
// TargetEnd: no target, replay all the WAL there is.
const (
	TargetEnd       TargetKind = iota // no recovery target: the end of the archive
	TargetTime                        // recovery_target_time
	TargetLSN                         // recovery_target_lsn
	TargetXID                         // recovery_target_xid
	TargetName                        // recovery_target_name (pg_create_restore_point)
	TargetImmediate                   // recovery_target = 'immediate': the backup's end
)

func (k TargetKind) String() string {
	switch k {
	case TargetEnd:
		return "end"
	case TargetTime:
		return "time"
	case TargetLSN:
		return "lsn"
	case TargetXID:
		return "xid"
	case TargetName:
		return "name"
	case TargetImmediate:
		return "immediate"
	}
	return fmt.Sprintf("TargetKind(%d)", int(k))
}

// MaxRestorePointName is the longest restore point name PostgreSQL keeps
// (MAXFNAMELEN - 1 bytes).
const MaxRestorePointName = 63

// Target is a point-in-time recovery target. The zero value is TargetEnd:
// replay to the end of the archive. Only the field of its Kind is used.
type Target struct {
	Kind TargetKind
	Time time.Time     // TargetTime; kept to the microsecond, as PostgreSQL does
	LSN  pglogrepl.LSN // TargetLSN
	XID  uint64        // TargetXID; PostgreSQL uses the low 32 bits (the epoch is ignored)
	Name string        // TargetName
	// Exclusive stops just before the target instead of just after it
	// (recovery_target_inclusive = false). It applies to time, LSN and xid
	// targets only.
	Exclusive bool
}

// TimeTarget, LSNTarget, XIDTarget, NameTarget and ImmediateTarget build
// targets; Validate checks them.
func TimeTarget(t time.Time) Target {
	return Target{Kind: TargetTime, Time: t.Truncate(time.Microsecond)}
}
func LSNTarget(lsn pglogrepl.LSN) Target { return Target{Kind: TargetLSN, LSN: lsn} }
func XIDTarget(xid uint64) Target        { return Target{Kind: TargetXID, XID: xid} }
func NameTarget(name string) Target      { return Target{Kind: TargetName, Name: name} }
func ImmediateTarget() Target            { return Target{Kind: TargetImmediate} }

// Validate reports a target PostgreSQL would refuse.
func (t Target) Validate() error {
	switch t.Kind {
	case TargetEnd, TargetImmediate:
	case TargetTime:
		if t.Time.IsZero() {
			return fmt.Errorf("%w: a time target needs a time", ErrInvalidTarget)
		}
	case TargetLSN:
		if t.LSN == 0 {
			return fmt.Errorf("%w: LSN 0/0 is not a WAL location", ErrInvalidTarget)
		}
	case TargetXID:
		if uint32(t.XID) < 3 {
			return fmt.Errorf("%w: transaction ID %d is not a normal transaction ID (its low 32 bits must be 3 or more)", ErrInvalidTarget, t.XID)
		}
	case TargetName:
		if t.Name == "" {
			return fmt.Errorf("%w: a restore point name must not be empty", ErrInvalidTarget)
		}
		if len(t.Name) > MaxRestorePointName {
			return fmt.Errorf("%w: restore point name %q is %d bytes; PostgreSQL keeps at most %d", ErrInvalidTarget, t.Name, len(t.Name), MaxRestorePointName)
		}
		if strings.ContainsAny(t.Name, "\x00\n\r") {
			return fmt.Errorf("%w: restore point name %q holds a control character", ErrInvalidTarget, t.Name)
		}
	default:
		return fmt.Errorf("%w: unknown kind %d", ErrInvalidTarget, int(t.Kind))
	}
	if t.Exclusive && !t.HasInclusive() {
		return fmt.Errorf("%w: only time, LSN and xid targets can be exclusive", ErrInvalidTarget)
	}
	return nil
}

// HasInclusive reports whether recovery_target_inclusive applies to the
// target (time, LSN and xid targets).
func (t Target) HasInclusive() bool {
	return t.Kind == TargetTime || t.Kind == TargetLSN || t.Kind == TargetXID
}

// IsEnd reports whether the target is the end of the archive (no target).
func (t Target) IsEnd() bool { return t.Kind == TargetEnd }

// Value is the target's value as PostgreSQL reads it from its setting:
// the time in UTC with microseconds and an explicit offset (so the
// server's TimeZone does not change its meaning), the LSN, the xid in
// decimal, the name, or "immediate". It is "" for TargetEnd.
func (t Target) Value() string {
	switch t.Kind {
	case TargetTime:
		return FormatTargetTime(t.Time)
	case TargetLSN:
		return t.LSN.String()
	case TargetXID:
		return strconv.FormatUint(t.XID, 10)
	case TargetName:
		return t.Name
	case TargetImmediate:
		return "immediate"
	}
	return ""
}

// Setting is the name of the PostgreSQL setting that holds the target
// (recovery_target_time, ...), "" for TargetEnd.
func (t Target) Setting() string {
	switch t.Kind {
	case TargetTime:
		return "recovery_target_time"
	case TargetLSN:
		return "recovery_target_lsn"
	case TargetXID:
		return "recovery_target_xid"
	case TargetName:
		return "recovery_target_name"
	case TargetImmediate:
		return "recovery_target"
	}
	return ""
}

// String describes the target for people: "time 2026-01-02 03:04:05.123456+00",
// "lsn 0/3000060", "xid 742", "name \"before-upgrade\"", "immediate"
// (the end of the backup) or "end of archive".
func (t Target) String() string {
	var s string
	switch t.Kind {
	case TargetEnd:
		return "end of archive"
	case TargetImmediate:
		return "immediate (the end of the backup)"
	case TargetName:
		s = "name " + strconv.Quote(t.Name)
	default:
		s = t.Kind.String() + " " + t.Value()
	}
	if t.Exclusive {
		s += " (exclusive)"
	}
	return s
}

// MarshalJSON writes {"kind": ..., "value": ..., "inclusive": ...}; value
// is in the form PostgreSQL reads (see Value), inclusive only where it
// applies.
func (t Target) MarshalJSON() ([]byte, error) {
	doc := struct {
		Kind      string `json:"kind"`
		Value     string `json:"value,omitempty"`
		Inclusive *bool  `json:"inclusive,omitempty"`
	}{Kind: t.Kind.String(), Value: t.Value()}
	if t.HasInclusive() {
		inc := !t.Exclusive
		doc.Inclusive = &inc
	}
	return json.Marshal(doc)
}

// targetTimeLayout is how targets are written: PostgreSQL's own
// timestamptz output in UTC, with microseconds.
const targetTimeLayout = "2006-01-02 15:04:05.000000-07"

// FormatTargetTime renders t for recovery_target_time: UTC, microseconds,
// explicit "+00" offset.
func FormatTargetTime(t time.Time) string {
	return t.UTC().Truncate(time.Microsecond).Format(targetTimeLayout)
}

// timeLayouts are the forms ParseTargetTime accepts, with a zone...
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999Z0700",
	"2006-01-02 15:04:05.999999999Z07",
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02T15:04:05.999999999Z07",
	"2006-01-02 15:04:05.999999999 MST",
}

// ...and without one (read in loc).
var localLayouts = []string{
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04",
	"2006-01-02",
}

// ParseTargetTime reads a recovery target time: RFC 3339
// ("2026-01-02T03:04:05.123Z"), PostgreSQL's timestamptz output
// ("2026-01-02 03:04:05.123456+00", "+05:30" and "+0530" too), or either
// without a zone ("2026-01-02 03:04:05", "2026-01-02"), which is read in
// loc (nil means UTC). The result is truncated to the microsecond, which
// is PostgreSQL's precision; commit timestamps are whole microseconds, so
// truncation never moves the target across a commit.
func ParseTargetTime(s string, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	if loc == nil {
		loc = time.UTC
	}
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			if l == timeLayouts[len(timeLayouts)-1] && t.Location() != time.UTC && zoneUnknown(t) {
				continue // a zone abbreviation Go does not know gives a fabricated offset
			}
			return t.Truncate(time.Microsecond), nil
		}
	}
	for _, l := range localLayouts {
		if t, err := time.ParseInLocation(l, s, loc); err == nil {
			return t.Truncate(time.Microsecond), nil
		}
	}
	return time.Time{}, fmt.Errorf("%w: time %q: use RFC 3339 (2026-01-02T15:04:05Z) or \"2026-01-02 15:04:05.123456+00\"", ErrInvalidTarget, s)
}

// zoneUnknown reports whether time.Parse invented a zero offset for an
// abbreviation it does not know.
func zoneUnknown(t time.Time) bool {
	name, off := t.Zone()
	return off == 0 && name != "UTC" && name != "GMT"
}

// ParseTargetLSN reads an LSN in PostgreSQL's form, "16/B374D848".
func ParseTargetLSN(s string) (pglogrepl.LSN, error) {
	lsn, ok := parseLSNStrict(strings.TrimSpace(s))
	if !ok {
		return 0, fmt.Errorf("%w: LSN %q: use PostgreSQL's form, e.g. 0/3000060", ErrInvalidTarget, s)
	}
	if lsn == 0 {
		return 0, fmt.Errorf("%w: LSN 0/0 is not a WAL location", ErrInvalidTarget)
	}
	return lsn, nil
}

// ParseTargetXID reads a transaction ID in decimal, as txid_current() or
// pg_current_xact_id() return it (the epoch in the high 32 bits is
// accepted and ignored by PostgreSQL).
func ParseTargetXID(s string) (uint64, error) {
	x, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: transaction ID %q: want a decimal number", ErrInvalidTarget, s)
	}
	if t := XIDTarget(x); t.Validate() != nil {
		return 0, t.Validate()
	}
	return x, nil
}

// TargetAction is what PostgreSQL does once it reaches a recovery target
// (recovery_target_action).
type TargetAction string

// The target actions. PostgreSQL's default is ActionPause.
const (
	// ActionPause keeps the server in recovery, read-only, at the target:
	// check the data, then SELECT pg_wal_replay_resume() to promote. With
	// hot_standby = off PostgreSQL shuts down instead.
	ActionPause TargetAction = "pause"
	// ActionPromote ends recovery at the target and opens the server for
	// writes on a new timeline.
	ActionPromote TargetAction = "promote"
	// ActionShutdown stops the server at the target; starting it again
	// replays from the last restartpoint unless the recovery settings change.
	ActionShutdown TargetAction = "shutdown"
)

// DefaultTargetAction is pgvault's default: PostgreSQL's own (pause), so
// that an overshooting or wrong target can still be corrected before the
// server forks a new timeline.
const DefaultTargetAction = ActionPause

// ParseTargetAction reads "pause", "promote" or "shutdown".
func ParseTargetAction(s string) (TargetAction, error) {
	switch a := TargetAction(strings.ToLower(strings.TrimSpace(s))); a {
	case ActionPause, ActionPromote, ActionShutdown:
		return a, nil
	}
	return "", fmt.Errorf("%w: target action %q: use pause, promote or shutdown", ErrInvalidTarget, s)
}

// Describe says in a sentence what PostgreSQL does at the target.
func (a TargetAction) Describe() string {
	switch a {
	case ActionPromote:
		return "promote: end recovery and accept writes on a new timeline"
	case ActionShutdown:
		return "shut down: stop the server at the target"
	default:
		return "pause: stay read-only in recovery; SELECT pg_wal_replay_resume() promotes"
	}
}

// TimelineGoal is recovery_target_timeline: which timeline recovery
// follows. The zero value is TimelineLatest.
type TimelineGoal struct {
	Kind TimelineKind
	ID   uint32 // for TimelineID
}

// TimelineKind is how a TimelineGoal is given.
type TimelineKind int

const (
	// TimelineLatest follows the newest timeline in the archive: the
	// highest N, counting up from the backup's timeline, for which
	// N.history exists (PostgreSQL's default since 12).
	TimelineLatest TimelineKind = iota
	// TimelineCurrent stays on the backup's timeline.
	TimelineCurrent
	// TimelineID follows the given timeline.
	TimelineID
)

// ParseTimelineGoal reads "latest", "current" or a timeline ID (decimal).
func ParseTimelineGoal(s string) (TimelineGoal, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "latest":
		return TimelineGoal{Kind: TimelineLatest}, nil
	case "current":
		return TimelineGoal{Kind: TimelineCurrent}, nil
	}
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil || n == 0 {
		return TimelineGoal{}, fmt.Errorf("%w: timeline %q: use latest, current or a timeline ID (1 or more)", ErrInvalidTarget, s)
	}
	return TimelineGoal{Kind: TimelineID, ID: uint32(n)}, nil
}

// String is the value of recovery_target_timeline: "latest", "current" or
// the ID in decimal.
func (g TimelineGoal) String() string {
	switch g.Kind {
	case TimelineCurrent:
		return "current"
	case TimelineID:
		return strconv.FormatUint(uint64(g.ID), 10)
	}
	return "latest"
}

// MarshalText writes String.
func (g TimelineGoal) MarshalText() ([]byte, error) { return []byte(g.String()), nil }

// Resolve gives the timeline recovery will follow for a backup on
// timeline backupTLI, given which timelines have a history file in the
// archive: like PostgreSQL's findNewestTimeLine, "latest" counts up from
// backupTLI while N+1.history exists.
func (g TimelineGoal) Resolve(backupTLI uint32, hasHistory func(tli uint32) bool) uint32 {
	switch g.Kind {
	case TimelineCurrent:
		return backupTLI
	case TimelineID:
		return g.ID
	}
	tli := backupTLI
	for tli < ^uint32(0) && hasHistory(tli+1) {
		tli++
	}
	return tli
}

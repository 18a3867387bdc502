package wal

import (
	"bytes"
	"fmt"
	"strings"
)

// Signal files (PostgreSQL 12 and later): their presence in the data
// directory starts archive recovery or standby mode.
const (
	RecoverySignalFile = "recovery.signal"
	StandbySignalFile  = "standby.signal"
)

// RecoveryConfig is the recovery configuration of a restored data
// directory: what Render writes into postgresql.auto.conf and which signal
// file starts recovery. The zero value (with a RestoreCommand) recovers to
// the end of the archive on the latest timeline and promotes.
type RecoveryConfig struct {
	// RestoreCommand fetches WAL from the archive (restore_command); see
	// RestoreCommand for building one. Empty leaves restore_command unset
	// (recovery then reads only pg_wal, and a standby only streams).
	RestoreCommand string
	// Target is where recovery stops; TargetEnd (the zero value) replays
	// everything the archive holds and then promotes.
	Target Target
	// Action is recovery_target_action, used only with a target; ""
	// means DefaultTargetAction. It is always written explicitly.
	Action TargetAction
	// Timeline is recovery_target_timeline; the zero value is latest.
	Timeline TimelineGoal
	// Standby starts a standby (standby.signal) instead of a
	// one-off recovery: it never ends recovery on its own, replaying from
	// the archive and streaming from PrimaryConnInfo. A standby has no
	// recovery target.
	Standby bool
	// PrimaryConnInfo is primary_conninfo (a libpq connection string),
	// for a standby only.
	PrimaryConnInfo string
}

// Validate reports combinations PostgreSQL would refuse or that make no
// sense.
func (c RecoveryConfig) Validate() error {
	if err := c.Target.Validate(); err != nil {
		return err
	}
	if c.Action != "" {
		if _, err := ParseTargetAction(string(c.Action)); err != nil {
			return err
		}
		if c.Target.IsEnd() {
			return fmt.Errorf("%w: a target action needs a recovery target", ErrInvalidTarget)
		}
	}
	if c.Standby && !c.Target.IsEnd() {
		return fmt.Errorf("%w: a standby follows its primary and has no recovery target (%s)", ErrInvalidTarget, c.Target)
	}
	if c.PrimaryConnInfo != "" && !c.Standby {
		return fmt.Errorf("%w: primary_conninfo is for a standby", ErrInvalidTarget)
	}
	if c.Standby && c.RestoreCommand == "" && c.PrimaryConnInfo == "" {
		return fmt.Errorf("%w: a standby needs a restore_command or a primary_conninfo to get WAL from", ErrInvalidTarget)
	}
	if c.Timeline.Kind == TimelineID && c.Timeline.ID == 0 {
		return fmt.Errorf("%w: timeline 0 does not exist", ErrInvalidTarget)
	}
	return nil
}

// EffectiveAction is the target action PostgreSQL will apply: Action, or
// DefaultTargetAction when it is unset.
func (c RecoveryConfig) EffectiveAction() TargetAction {
	if c.Action == "" {
		return DefaultTargetAction
	}
	return c.Action
}

// SignalFile is the file that starts recovery: standby.signal for a
// standby, recovery.signal otherwise.
func (c RecoveryConfig) SignalFile() string {
	if c.Standby {
		return StandbySignalFile
	}
	return RecoverySignalFile
}

// Setting is one "name = 'value'" line of a configuration file.
type Setting struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// String renders the setting as a postgresql.conf line (without the
// newline), the value quoted with QuoteConfString.
func (s Setting) String() string { return s.Name + " = " + QuoteConfString(s.Value) }

// Settings lists the recovery settings in the order Render writes them.
// Everything that changes what recovery does is explicit, including
// PostgreSQL's defaults (recovery_target_inclusive, the target action and
// recovery_target_timeline), so the file says what will happen.
func (c RecoveryConfig) Settings() []Setting {
	var out []Setting
	if c.RestoreCommand != "" {
		out = append(out, Setting{"restore_command", c.RestoreCommand})
	}
	if !c.Target.IsEnd() {
		out = append(out, Setting{c.Target.Setting(), c.Target.Value()})
		if c.Target.HasInclusive() {
			out = append(out, Setting{"recovery_target_inclusive", fmt.Sprint(!c.Target.Exclusive)})
		}
		out = append(out, Setting{"recovery_target_action", string(c.EffectiveAction())})
	}
	out = append(out, Setting{"recovery_target_timeline", c.Timeline.String()})
	if c.Standby && c.PrimaryConnInfo != "" {
		out = append(out, Setting{"primary_conninfo", c.PrimaryConnInfo})
	}
	return out
}

// Render returns the settings as postgresql.conf lines.
func (c RecoveryConfig) Render() string {
	var b strings.Builder
	for _, s := range c.Settings() {
		b.WriteString(s.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// RecoveryParams are the settings that steer archive recovery or a
// standby. ApplyRecoveryConfig comments out every one of them already in
// postgresql.auto.conf, so that no setting left by an earlier restore (a
// backup of a restored server carries its recovery settings) mixes with
// the new ones: a stale recovery_target_* would otherwise still apply.
var RecoveryParams = []string{
	"restore_command", "archive_cleanup_command", "recovery_end_command",
	"recovery_target", "recovery_target_name", "recovery_target_time",
	"recovery_target_xid", "recovery_target_lsn", "recovery_target_inclusive",
	"recovery_target_timeline", "recovery_target_action",
	"primary_conninfo", "primary_slot_name",
}

// disabledPrefix marks the lines ApplyRecoveryConfig comments out.
const disabledPrefix = "# disabled by pgvault restore: "

// ApplyRecoveryConfig returns the content of postgresql.auto.conf (old may
// be empty) with c applied: every earlier recovery setting (RecoveryParams)
// commented out, then a comment line headed by note (e.g. "pgvault restore
// of backup 1a2b3c4d at 2026-01-02 03:04:05Z") and c's settings appended.
// Other lines are kept byte for byte.
func ApplyRecoveryConfig(old []byte, c RecoveryConfig, note string) []byte {
	var b bytes.Buffer
	for len(old) > 0 {
		line := old
		if i := bytes.IndexByte(old, '\n'); i >= 0 {
			line, old = old[:i+1], old[i+1:]
		} else {
			old = nil
		}
		if name, ok := confLineName(string(line)); ok && isRecoveryParam(name) {
			b.WriteString(disabledPrefix)
		}
		b.Write(line)
	}
	if b.Len() > 0 && !bytes.HasSuffix(b.Bytes(), []byte("\n")) {
		b.WriteByte('\n')
	}
	note = strings.Join(strings.Fields(note), " ")
	if note != "" {
		b.WriteString("# " + note + "\n")
	}
	b.WriteString(c.Render())
	return b.Bytes()
}

// confLineName returns the parameter a configuration file line sets:
// "name = value", "name value" or "name=value", with leading blanks; not
// for comments, blank lines and include directives' targets.
func confLineName(line string) (string, bool) {
	s := strings.TrimLeft(line, " \t\r\f\v")
	end := 0
	for end < len(s) {
		c := s[end]
		if c == '_' || c == '.' || c == '-' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80 {
			end++
			continue
		}
		break
	}
	if end == 0 {
		return "", false
	}
	rest := strings.TrimLeft(s[end:], " \t")
	if rest == "" || rest[0] == '#' || rest[0] == '\n' || rest[0] == '\r' {
		return "", false // a name without a value is not a setting
	}
	return strings.ToLower(s[:end]), true
}

func isRecoveryParam(name string) bool {
	for _, p := range RecoveryParams {
		if name == p {
			return true
		}
	}
	return false
}

// QuoteConfString quotes s as a string value in postgresql.conf and
// postgresql.auto.conf: in single quotes, with a single quote doubled and a
// backslash doubled (the configuration file reader treats backslash as an
// escape character, GUC_scanstr), and newline, carriage return, tab, form
// feed and backspace written as \n, \r, \t, \f, \b (a raw line break would
// end the value). Other bytes, UTF-8 included, are kept as they are.
func QuoteConfString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'':
			b.WriteString("''")
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\f':
			b.WriteString(`\f`)
		case '\b':
			b.WriteString(`\b`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// RestoreCommand builds a restore_command that runs argv followed by the
// name of the WAL file PostgreSQL wants and the path to write it to
// ("%f %p"): each argument is quoted for /bin/sh (PostgreSQL runs the
// command through the shell) and every "%" in them is doubled, since
// PostgreSQL replaces %f, %p, %r and %% in the command before running it.
func RestoreCommand(argv ...string) string {
	parts := make([]string, 0, len(argv)+2)
	for _, a := range argv {
		parts = append(parts, strings.ReplaceAll(ShellQuote(a), "%", "%%"))
	}
	return strings.Join(append(parts, "%f", "%p"), " ")
}

// ShellQuote quotes s for /bin/sh, leaving it bare when it holds only
// characters the shell does not treat specially.
func ShellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for i := 0; i < len(s) && safe; i++ {
		c := s[i]
		safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			strings.IndexByte("-_./:@,+%", c) >= 0
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

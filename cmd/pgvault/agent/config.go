package agent

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pgvault/pgvault/backup"
)

// Defaults of the configuration (docs/reference/config.md lists them).
const (
	DefaultListen              = "127.0.0.1:9187"
	DefaultStateFile           = "/var/lib/pgvault/state.json"
	DefaultAlertDir            = "/var/lib/pgvault/alerts"
	DefaultMaintenanceModeFile = "/var/lib/pgvault/maintenance_mode_file"
	DefaultStateInterval       = 10 * time.Second
	DefaultStatsInterval       = time.Minute
	DefaultIntervalHours       = 24
	DefaultBasebackupCount     = 2
	DefaultBasebackupCountMin  = 2
	DefaultRetentionInterval   = time.Hour
	DefaultWALCheckInterval    = time.Hour
	DefaultDrillTimeout        = 10 * time.Minute
	DefaultSyntheticTimeout    = time.Hour
	DefaultUploadRetriesLimit  = 3
	DefaultSlot                = "pgvault"
)

// ErrConfig is matched by every error about the content of the
// configuration file (the CLI exits 2 for them).
var ErrConfig = errors.New("invalid configuration")

// ConfigError is a mistake in the configuration file: the field (a dotted
// path such as sites.main.basebackup.hour), the line when known, and what
// is wrong with it, on one line.
type ConfigError struct {
	File  string
	Field string
	Line  int
	Msg   string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString("config")
	if e.File != "" {
		b.WriteString(" " + e.File)
	}
	if e.Field != "" {
		b.WriteString(": " + e.Field)
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", e.Line)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// Is makes every ConfigError match ErrConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

// Config is the agent's configuration file. Parse fills in the defaults;
// Load also reads the secrets.
type Config struct {
	Sites map[string]*Site `yaml:"sites"`
	HTTP  HTTP             `yaml:"http"`
	// StateFile is pghoard's json_state_file_path.
	StateFile     string   `yaml:"state_file"`
	StateInterval Duration `yaml:"state_interval"`
	// StatsInterval is how often repository figures (stored bytes, PITR
	// window, last backup) are refreshed for metrics, and how often an
	// archive-mode site asks PostgreSQL for its WAL position.
	StatsInterval Duration `yaml:"stats_interval"`
	// AlertDir is pghoard's alert_file_dir.
	AlertDir string `yaml:"alert_dir"`
	// MaintenanceModeFile is the default of every site's.
	MaintenanceModeFile       string `yaml:"maintenance_mode_file"`
	CacheDir                  string `yaml:"cache_dir"`
	LogLevel                  string `yaml:"log_level"`
	UploadRetriesWarningLimit int    `yaml:"upload_retries_warning_limit"`

	// The monitoring pghoard users already run, besides /metrics, under
	// pghoard's names (config_monitoring.go), and a webhook for alert
	// events. Statsd and Pushgateway are sent every StatsInterval.
	Statsd         *Statsd      `yaml:"statsd"`
	Pushgateway    *Pushgateway `yaml:"pushgateway"`
	Syslog         bool         `yaml:"syslog"`
	SyslogAddress  string       `yaml:"syslog_address"`
	SyslogFacility string       `yaml:"syslog_facility"`
	Webhook        *Webhook     `yaml:"webhook"`

	// File is where the configuration was read from ("" for Parse of bytes).
	File string `yaml:"-"`
}

// HTTP configures the monitoring listener.
type HTTP struct {
	// Listen is host:port; "off" disables the listener.
	Listen string `yaml:"listen"`
}

// Site is one PostgreSQL cluster and the repository it is backed up to.
type Site struct {
	Name string `yaml:"-"`
	// PG lists the nodes: libpq conninfo strings or postgres:// URLs, tried
	// in order (failover).
	PG Nodes `yaml:"pg"`
	// PGPasswordFile holds the PostgreSQL password (first line).
	PGPasswordFile string `yaml:"pg_password_file"`
	Repo           string `yaml:"repo"`
	// PasswordFile holds the repository password (first line).
	PasswordFile string `yaml:"password_file"`
	// Mode is "stream" (the agent streams WAL over a replication slot) or
	// "archive" (PostgreSQL's archive_command runs `pgvault wal push`).
	Mode                      string     `yaml:"mode"`
	Active                    *bool      `yaml:"active"`
	Slot                      string     `yaml:"slot"`
	Synchronous               bool       `yaml:"synchronous"`
	ApplicationName           string     `yaml:"application_name"`
	CompressionLevel          int        `yaml:"compression_level"`
	CacheDir                  string     `yaml:"cache_dir"`
	MaintenanceModeFile       string     `yaml:"maintenance_mode_file"`
	UploadRetriesWarningLimit int        `yaml:"upload_retries_warning_limit"`
	Basebackup                Basebackup `yaml:"basebackup"`
	Retention                 Retention  `yaml:"retention"`
	WALCheck                  WALCheck   `yaml:"wal_check"`
	Drill                     Drill      `yaml:"drill"`
	Synthetic                 Synthetic  `yaml:"synthetic"`

	// Secrets are resolved by Load (environment, then files).
	Secrets Secrets `yaml:"-"`
}

// Basebackup is the base backup schedule, as pghoard's
// basebackup_interval_hours, basebackup_hour and basebackup_minute.
type Basebackup struct {
	// IntervalHours: nil means 24; 0 turns scheduled backups off.
	IntervalHours *int `yaml:"interval_hours"`
	// Hour and Minute (both or neither, UTC) align backups to fixed times:
	// Hour, Hour+interval, ... at Minute.
	Hour   *int `yaml:"hour"`
	Minute *int `yaml:"minute"`
	// Interval, a Go duration, overrides IntervalHours (finer schedules,
	// e.g. for tests).
	Interval       Duration `yaml:"interval"`
	FastCheckpoint bool     `yaml:"fast_checkpoint"`
	MaxRateKB      int      `yaml:"max_rate_kb"`
	// Method is backup --method: auto (""), local or stream.
	Method string `yaml:"method"`
	// DataDir is backup --pgdata, for local backups.
	DataDir string `yaml:"data_directory"`
}

// Retention is the policy applied after every backup and every Interval.
type Retention struct {
	// Count (nil: 2), CountMin (nil: 2) and AgeDaysMax are pghoard's
	// basebackup_count, basebackup_count_min and basebackup_age_days_max.
	Count       *int `yaml:"basebackup_count"`
	CountMin    *int `yaml:"basebackup_count_min"`
	AgeDaysMax  int  `yaml:"basebackup_age_days_max"`
	KeepDaily   int  `yaml:"keep_daily"`
	KeepWeekly  int  `yaml:"keep_weekly"`
	KeepMonthly int  `yaml:"keep_monthly"`
	// RealCountMin keeps at least this many real base backups (taken from
	// the server, not synthetic), whatever the other rules say.
	RealCountMin int `yaml:"real_basebackup_count_min"`
	// Interval is how often retention runs besides after each backup.
	Interval Duration `yaml:"interval"`
	// Grace is prune's grace period (never below repo.DefaultReuseWindow).
	Grace Duration `yaml:"grace"`
}

// Policy is the retention policy as backup.Prune takes it.
func (r Retention) Policy() backup.Policy {
	p := backup.Policy{AgeDaysMax: r.AgeDaysMax, KeepDaily: r.KeepDaily, KeepWeekly: r.KeepWeekly, KeepMonthly: r.KeepMonthly, RealCountMin: r.RealCountMin}
	if r.Count != nil {
		p.Count = *r.Count
	}
	if r.CountMin != nil {
		p.CountMin = *r.CountMin
	}
	return p
}

// WALCheck schedules `wal check`.
type WALCheck struct {
	Interval Duration `yaml:"interval"`
}

// Drill schedules recovery drills (`pgvault verify --boot latest`). Off
// unless IntervalHours or Interval is set.
type Drill struct {
	IntervalHours int      `yaml:"interval_hours"`
	Interval      Duration `yaml:"interval"`
	Timeout       Duration `yaml:"timeout"`
	// Owner is the OS user PostgreSQL runs as during the drill.
	Owner string `yaml:"owner"`
	// PGBin is the folder of pg_ctl and postgres (default: found by
	// pgvault verify).
	PGBin string `yaml:"pg_bin"`
	// SQL is a query that must succeed on the booted backup.
	SQL string `yaml:"sql"`
}

// Synthetic schedules synthetic backups (`pgvault backup --synthetic`):
// new base backups rolled forward from the WAL in the repository, reading
// nothing from the database (e.g. real base backups weekly, synthetic
// ones hourly). Off unless Interval is set.
type Synthetic struct {
	Interval Duration `yaml:"interval"`
	Timeout  Duration `yaml:"timeout"`
	// Owner is the OS user PostgreSQL runs as during the replay.
	Owner string `yaml:"owner"`
	// PGBin is the folder of pg_ctl and postgres of the cluster's major
	// (default: found as verify --boot finds them).
	PGBin string `yaml:"pg_bin"`
}

// Every is the drill interval (0: drills are off).
func (d Drill) Every() time.Duration {
	if d.Interval.D > 0 {
		return d.Interval.D
	}
	return time.Duration(d.IntervalHours) * time.Hour
}

// Secrets are a site's resolved passwords and where they came from (an
// environment variable or a file; "" when none was given).
type Secrets struct {
	RepoPassword     string
	RepoPasswordFrom string
	PGPassword       string
	PGPasswordFrom   string
}

// IsActive reports the site's active flag (default true).
func (s *Site) IsActive() bool { return s.Active == nil || *s.Active }

// Schedule is the site's base backup schedule.
func (s *Site) Schedule() Schedule {
	b := s.Basebackup
	sc := Schedule{Hour: -1, Minute: -1}
	switch {
	case b.Interval.D > 0:
		sc.Interval = b.Interval.D
	case b.IntervalHours != nil:
		sc.Interval = time.Duration(*b.IntervalHours) * time.Hour
	}
	if b.Hour != nil && b.Minute != nil {
		sc.Hour, sc.Minute = *b.Hour, *b.Minute
	}
	return sc
}

// Nodes is one conninfo or a list of them.
type Nodes []string

// UnmarshalYAML accepts a string or a sequence of strings.
func (n *Nodes) UnmarshalYAML(node *yaml.Node) error {
	switch node.Kind {
	case yaml.ScalarNode:
		if node.Tag == "!!null" {
			*n = nil
			return nil
		}
		*n = Nodes{node.Value}
		return nil
	case yaml.SequenceNode:
		var out Nodes
		for _, c := range node.Content {
			if c.Kind != yaml.ScalarNode || c.Tag == "!!null" {
				return fmt.Errorf("line %d: a node is a conninfo string such as \"host=db1 port=5432 user=pgvault\"", c.Line)
			}
			out = append(out, c.Value)
		}
		*n = out
		return nil
	}
	return fmt.Errorf("line %d: pg is a conninfo string or a list of them", node.Line)
}

// Duration is a Go duration written as a string ("30s", "5m", "1h").
type Duration struct{ D time.Duration }

// UnmarshalYAML parses a Go duration.
func (d *Duration) UnmarshalYAML(node *yaml.Node) error {
	if node.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: expected a Go duration such as 30s, 5m or 1h", node.Line)
	}
	v, err := time.ParseDuration(node.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a Go duration (write e.g. 30s, 5m or 1h)", node.Line, node.Value)
	}
	if v < 0 {
		return fmt.Errorf("line %d: %q is negative", node.Line, node.Value)
	}
	d.D = v
	return nil
}

// MarshalText writes the duration as Go does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.D.String()), nil }

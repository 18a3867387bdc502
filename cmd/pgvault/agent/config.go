package agent

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.yaml.in/yaml/v3"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend/all"
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
	DefaultUploadRetriesLimit  = 3
	DefaultSlot                = "pgvault"
	DefaultCompressionLevel    = 3
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
	// Interval is how often retention runs besides after each backup.
	Interval Duration `yaml:"interval"`
	// Grace is prune's grace period (never below repo.DefaultReuseWindow).
	Grace Duration `yaml:"grace"`
}

// Policy is the retention policy as backup.Prune takes it.
func (r Retention) Policy() backup.Policy {
	p := backup.Policy{AgeDaysMax: r.AgeDaysMax, KeepDaily: r.KeepDaily, KeepWeekly: r.KeepWeekly, KeepMonthly: r.KeepMonthly}
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

// Parse decodes and validates a configuration document and fills in the
// defaults. Unknown fields, wrong types and bad values are ConfigErrors
// naming the field. It reads no other file (Load resolves secrets);
// relative paths are taken relative to the folder of file.
func Parse(data []byte, file string) (*Config, error) {
	return parse(data, file, "")
}

// parse is Parse with the folder the default state_file, alert_dir and
// maintenance_mode_file go in ("" for /var/lib/pgvault).
func parse(data []byte, file, stateDir string) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlError(file, err, nil)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, &ConfigError{File: file, Field: "sites", Msg: "the file is empty: configure at least one site (see docs/reference/config.md)"}
	}
	w := &walker{lines: map[int]string{}, nulls: map[string]bool{}}
	w.walk(doc.Content[0], reflect.TypeOf(Config{}), "")
	if w.err != nil {
		w.err.File = file
		return nil, w.err
	}
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, yamlError(file, err, w.lines)
	}
	cfg.File = file
	for name, site := range cfg.Sites {
		// pghoard: a null basebackup_interval_hours takes no backups at all
		// (yaml.v3 cannot tell null from absent; the node tree can).
		if site != nil && w.nulls["sites."+name+".basebackup.interval_hours"] {
			zero := 0
			site.Basebackup.IntervalHours = &zero
		}
	}
	if err := cfg.fill(stateDir); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.File = file
			ce.Line = w.lineOf(ce.Field)
		}
		return nil, err
	}
	return &cfg, nil
}

// lineRe finds "line N: " in yaml.v3's messages.
var lineRe = regexp.MustCompile(`line (\d+): `)

// yamlError turns a yaml.v3 error into one ConfigError line, naming the
// field its line belongs to when known.
func yamlError(file string, err error, lines map[int]string) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
		if n := len(te.Errors) - 1; n > 0 {
			msg += fmt.Sprintf(" (and %d more)", n)
		}
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
	ce := &ConfigError{File: file}
	if m := lineRe.FindStringSubmatchIndex(msg); m != nil {
		ce.Line, _ = strconv.Atoi(msg[m[2]:m[3]])
		msg = msg[:m[0]] + msg[m[1]:]
		ce.Field = lines[ce.Line]
	}
	// yaml.v3 names Go types ("into int"); say what YAML wants instead.
	msg = strings.NewReplacer("into int", "into a whole number", "into bool", "into true/false",
		"into string", "into a string", "!!str", "string", "!!map", "mapping", "!!seq", "list").Replace(msg)
	ce.Msg = strings.Join(strings.Fields(msg), " ")
	return ce
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// walker checks that every key names a field, and records which field
// each line holds (for yaml.v3's line-numbered type errors).
type walker struct {
	lines map[int]string
	nulls map[string]bool // fields written as null
	err   *ConfigError
}

// record notes that line holds path; nodes are visited parents first, so
// a line keeps the most specific field on it.
func (w *walker) record(line int, path string) {
	if path != "" {
		w.lines[line] = path
	}
}

func (w *walker) lineOf(path string) int {
	best := 0
	for line, p := range w.lines {
		if p == path && (best == 0 || line < best) {
			best = line
		}
	}
	return best
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	if w.err != nil || n == nil {
		return
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	w.record(n.Line, path)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		w.nulls[path] = true
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return // the decoder reports the type mismatch
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" {
				continue
			}
			p := join(path, k.Value)
			w.record(k.Line, p)
			ft, ok := fields[k.Value]
			if !ok {
				names := make([]string, 0, len(fields))
				for name := range fields {
					names = append(names, name)
				}
				sort.Strings(names)
				w.err = &ConfigError{Field: p, Line: k.Line, Msg: "unknown field; known here: " + strings.Join(names, ", ")}
				return
			}
			w.walk(v, ft, p)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			w.record(k.Line, p)
			w.walk(v, t.Elem(), p)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, c := range n.Content {
			w.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	}
}

// yamlFields maps a struct's YAML keys to field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

var (
	siteNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)
	slotNameRe = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)
)

func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// abs makes p absolute relative to the configuration file's folder.
func (c *Config) abs(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	base := "."
	if c.File != "" {
		base = filepath.Dir(c.File)
	}
	if a, err := filepath.Abs(filepath.Join(base, p)); err == nil {
		return a
	}
	return p
}

// fill validates the configuration and sets the defaults; stateDir, if
// set, replaces /var/lib/pgvault in the default paths.
func (c *Config) fill(stateDir string) error {
	defState, defAlerts, defMaint := DefaultStateFile, DefaultAlertDir, DefaultMaintenanceModeFile
	if stateDir != "" {
		defState = filepath.Join(stateDir, filepath.Base(DefaultStateFile))
		defAlerts = filepath.Join(stateDir, filepath.Base(DefaultAlertDir))
		defMaint = filepath.Join(stateDir, filepath.Base(DefaultMaintenanceModeFile))
	}
	if len(c.Sites) == 0 {
		return fieldErr("sites", "no site configured: add at least one under sites: with pg, repo and mode")
	}
	switch c.HTTP.Listen {
	case "":
		c.HTTP.Listen = DefaultListen
	case "off":
	default:
		if _, port, err := net.SplitHostPort(c.HTTP.Listen); err != nil || port == "" {
			return fieldErr("http.listen", "%q is not host:port (e.g. 127.0.0.1:9187), or \"off\"", c.HTTP.Listen)
		}
	}
	if c.StateFile == "" {
		c.StateFile = defState
	}
	c.StateFile = c.abs(c.StateFile)
	if c.AlertDir == "" {
		c.AlertDir = defAlerts
	}
	c.AlertDir = c.abs(c.AlertDir)
	if c.MaintenanceModeFile == "" {
		c.MaintenanceModeFile = defMaint
	}
	c.MaintenanceModeFile = c.abs(c.MaintenanceModeFile)
	c.CacheDir = c.abs(c.CacheDir)
	if c.StateInterval.D == 0 {
		c.StateInterval.D = DefaultStateInterval
	}
	if c.StatsInterval.D == 0 {
		c.StatsInterval.D = DefaultStatsInterval
	}
	switch c.LogLevel {
	case "":
		c.LogLevel = "info"
	case "debug", "info", "warn", "error":
	default:
		return fieldErr("log_level", "%q: use debug, info, warn or error", c.LogLevel)
	}
	switch {
	case c.UploadRetriesWarningLimit == 0:
		c.UploadRetriesWarningLimit = DefaultUploadRetriesLimit
	case c.UploadRetriesWarningLimit < 1:
		return fieldErr("upload_retries_warning_limit", "must be 1 or more (failed attempts of one upload before the upload_retries_warning alert)")
	}
	names := make([]string, 0, len(c.Sites))
	for name := range c.Sites {
		names = append(names, name)
	}
	sort.Strings(names)
	envNames := map[string]string{}
	for _, name := range names {
		s := c.Sites[name]
		p := "sites." + name
		if !siteNameRe.MatchString(name) {
			return fieldErr(p, "site names hold only letters, digits, '-' and '_' (they name files, metric labels and environment variables)")
		}
		if other, dup := envNames[envName(name)]; dup {
			return fieldErr(p, "sites %q and %q share the environment variable prefix %s: rename one", other, name, envPrefix(name))
		}
		envNames[envName(name)] = name
		if s == nil {
			return fieldErr(p, "empty site: give at least pg and repo")
		}
		s.Name = name
		if err := c.fillSite(s, p); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) fillSite(s *Site, p string) error {
	if len(s.PG) == 0 {
		return fieldErr(p+".pg", "required: a PostgreSQL conninfo (\"host=... port=... user=...\") or a list of them for failover")
	}
	for i, n := range s.PG {
		f := fmt.Sprintf("%s.pg[%d]", p, i)
		if len(s.PG) == 1 {
			f = p + ".pg"
		}
		if strings.TrimSpace(n) == "" {
			return fieldErr(f, "empty conninfo")
		}
		if _, err := pgconn.ParseConfig(n); err != nil {
			return fieldErr(f, "%s", Redact(err.Error()))
		}
	}
	if s.Repo == "" {
		return fieldErr(p+".repo", "required: the repository URL (file:///path, s3://bucket/prefix?..., sftp://user@host/path)")
	}
	if _, err := all.ParseURL(s.Repo); err != nil {
		return fieldErr(p+".repo", "%v", err)
	}
	switch s.Mode {
	case "":
		s.Mode = "stream"
	case "stream", "archive":
	default:
		return fieldErr(p+".mode", "%q: use stream (the agent streams WAL) or archive (archive_command runs `pgvault wal push`)", s.Mode)
	}
	if s.Slot == "" {
		s.Slot = DefaultSlot
	}
	if !slotNameRe.MatchString(s.Slot) {
		return fieldErr(p+".slot", "%q: a replication slot name holds 1 to 63 lower-case letters, digits and '_'", s.Slot)
	}
	if s.ApplicationName == "" {
		s.ApplicationName = "pgvault"
	}
	switch {
	case s.CompressionLevel == 0:
		s.CompressionLevel = DefaultCompressionLevel
	case s.CompressionLevel < 1 || s.CompressionLevel > 19:
		return fieldErr(p+".compression_level", "%d: use 1 (fastest) to 19 (smallest)", s.CompressionLevel)
	}
	if s.CacheDir == "" {
		s.CacheDir = c.CacheDir
	}
	s.CacheDir = c.abs(s.CacheDir)
	if s.MaintenanceModeFile == "" {
		s.MaintenanceModeFile = c.MaintenanceModeFile
	}
	s.MaintenanceModeFile = c.abs(s.MaintenanceModeFile)
	s.PasswordFile = c.abs(s.PasswordFile)
	s.PGPasswordFile = c.abs(s.PGPasswordFile)
	switch {
	case s.UploadRetriesWarningLimit == 0:
		s.UploadRetriesWarningLimit = c.UploadRetriesWarningLimit
	case s.UploadRetriesWarningLimit < 1:
		return fieldErr(p+".upload_retries_warning_limit", "must be 1 or more")
	}

	b := &s.Basebackup
	bp := p + ".basebackup"
	if b.IntervalHours == nil {
		h := DefaultIntervalHours
		b.IntervalHours = &h
	} else if *b.IntervalHours < 0 {
		return fieldErr(bp+".interval_hours", "%d: use a number of hours, or 0 to take no scheduled backups", *b.IntervalHours)
	}
	if b.Interval.D > 0 && b.Interval.D < time.Second {
		return fieldErr(bp+".interval", "%s is too short: use at least 1s", b.Interval.D)
	}
	if b.Hour != nil && (*b.Hour < 0 || *b.Hour > 23) {
		return fieldErr(bp+".hour", "%d: use 0 to 23", *b.Hour)
	}
	if b.Minute != nil && (*b.Minute < 0 || *b.Minute > 59) {
		return fieldErr(bp+".minute", "%d: use 0 to 59", *b.Minute)
	}
	if (b.Hour == nil) != (b.Minute == nil) {
		missing := "minute"
		if b.Hour == nil {
			missing = "hour"
		}
		return fieldErr(bp+"."+missing, "required with %s: backups are aligned to hour:minute only when both are set (as pghoard's basebackup_hour and basebackup_minute)",
			map[string]string{"minute": "hour", "hour": "minute"}[missing])
	}
	if b.MaxRateKB != 0 && (b.MaxRateKB < 32 || b.MaxRateKB > 1048576) {
		return fieldErr(bp+".max_rate_kb", "%d: use 32 to 1048576 kB/s, or 0 for no limit", b.MaxRateKB)
	}
	if m, err := backup.ParseMethod(b.Method); err != nil {
		return fieldErr(bp+".method", "%q: use auto, local or stream", b.Method)
	} else if m == backup.MethodLocal && b.MaxRateKB != 0 {
		return fieldErr(bp+".method", "local reads the files itself: max_rate_kb needs method stream")
	}

	r := &s.Retention
	rp := p + ".retention"
	if r.Count == nil {
		n := DefaultBasebackupCount
		r.Count = &n
	}
	if r.CountMin == nil {
		n := DefaultBasebackupCountMin
		r.CountMin = &n
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"basebackup_count", *r.Count}, {"basebackup_count_min", *r.CountMin}, {"basebackup_age_days_max", r.AgeDaysMax},
		{"keep_daily", r.KeepDaily}, {"keep_weekly", r.KeepWeekly}, {"keep_monthly", r.KeepMonthly}} {
		if f.v < 0 {
			return fieldErr(rp+"."+f.name, "%d: must not be negative (0 turns the rule off)", f.v)
		}
	}
	if r.Interval.D == 0 {
		r.Interval.D = DefaultRetentionInterval
	}
	if r.Grace.D == 0 {
		r.Grace.D = repo.DefaultPruneGrace
	}
	if r.Grace.D < repo.DefaultReuseWindow {
		return fieldErr(rp+".grace", "%s is shorter than the %s in which a WAL streamer may reuse its own data: use at least %s",
			r.Grace.D, repo.DefaultReuseWindow, repo.DefaultReuseWindow)
	}
	if s.WALCheck.Interval.D == 0 {
		s.WALCheck.Interval.D = DefaultWALCheckInterval
	}
	d := &s.Drill
	if d.IntervalHours < 0 {
		return fieldErr(p+".drill.interval_hours", "%d: use a number of hours, or 0 for no drills", d.IntervalHours)
	}
	if d.Timeout.D == 0 {
		d.Timeout.D = DefaultDrillTimeout
	}
	if d.Owner == "" {
		d.Owner = "postgres"
	}
	d.PGBin = c.abs(d.PGBin)
	return nil
}

// envName is a site name as environment variables spell it.
func envName(site string) string {
	return strings.ToUpper(strings.ReplaceAll(site, "-", "_"))
}

func envPrefix(site string) string { return "PGVAULT_SITE_" + envName(site) + "_" }

// RepoPasswordEnv and PGPasswordEnv name the environment variables that
// override a site's secrets.
func RepoPasswordEnv(site string) string { return envPrefix(site) + "PASSWORD" }

// PGPasswordEnv names the variable that overrides the PostgreSQL password.
func PGPasswordEnv(site string) string { return envPrefix(site) + "PGPASSWORD" }

// LoadOptions tune Load.
type LoadOptions struct {
	// Getenv reads the environment (nil: os.Getenv).
	Getenv func(string) string
	// Strict refuses secret files (and a configuration file holding a
	// password) that every user of the machine may read: the agent loads
	// with it; status and doctor report instead.
	Strict bool
}

// Load reads, parses and validates the configuration file and resolves
// every site's secrets: for the repository password
// PGVAULT_SITE_<SITE>_PASSWORD, then PGVAULT_PASSWORD, then password_file;
// for the PostgreSQL password PGVAULT_SITE_<SITE>_PGPASSWORD, then
// pg_password_file (else libpq's own: password= in pg, PGPASSWORD,
// ~/.pgpass). Under systemd's StateDirectory= (STATE_DIRECTORY set) the
// default state_file, alert_dir and maintenance_mode_file go there.
func Load(path string, opts LoadOptions) (*Config, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	stateDir, _, _ := strings.Cut(getenv("STATE_DIRECTORY"), ":")
	cfg, err := parse(data, path, stateDir)
	if err != nil {
		return nil, err
	}
	if opts.Strict {
		if err := checkConfigFilePerms(cfg, path); err != nil {
			return nil, err
		}
	}
	for _, name := range cfg.SiteNames() {
		s := cfg.Sites[name]
		if err := s.resolveSecrets(getenv, opts.Strict); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// SiteNames lists the sites in name order.
func (c *Config) SiteNames() []string {
	names := make([]string, 0, len(c.Sites))
	for n := range c.Sites {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ErrInsecureSecret is matched by a secret file any user may read.
var ErrInsecureSecret = errors.New("secret readable by every user")

type insecureError struct{ msg string }

func (e *insecureError) Error() string        { return e.msg }
func (e *insecureError) Is(target error) bool { return target == ErrInsecureSecret }

// CheckSecretFile fails when path may be read by every user of the
// machine, with the command that fixes it.
func CheckSecretFile(field, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	if fi.Mode().Perm()&0o004 != 0 {
		return &insecureError{fmt.Sprintf("%s %s is readable by every user (mode %04o): run `chmod o-rwx %s` (and chown it to the agent's user); the agent refuses world-readable secrets",
			field, path, fi.Mode().Perm(), path)}
	}
	return nil
}

// checkConfigFilePerms refuses a world-readable configuration file that
// holds a PostgreSQL password.
func checkConfigFilePerms(cfg *Config, path string) error {
	for _, name := range cfg.SiteNames() {
		for _, n := range cfg.Sites[name].PG {
			if Redact(n) == n {
				continue
			}
			fi, err := os.Stat(path)
			if err == nil && fi.Mode().Perm()&0o004 != 0 {
				return &insecureError{fmt.Sprintf("config %s holds a password in sites.%s.pg and is readable by every user (mode %04o): run `chmod o-rwx %s`, or move the password to sites.%s.pg_password_file",
					path, name, fi.Mode().Perm(), path, name)}
			}
		}
	}
	return nil
}

func (s *Site) resolveSecrets(getenv func(string) string, strict bool) error {
	p := "sites." + s.Name
	s.Secrets = Secrets{}
	switch {
	case getenv(RepoPasswordEnv(s.Name)) != "":
		s.Secrets.RepoPassword, s.Secrets.RepoPasswordFrom = getenv(RepoPasswordEnv(s.Name)), RepoPasswordEnv(s.Name)
	case getenv("PGVAULT_PASSWORD") != "":
		s.Secrets.RepoPassword, s.Secrets.RepoPasswordFrom = getenv("PGVAULT_PASSWORD"), "PGVAULT_PASSWORD"
	case s.PasswordFile != "":
		pw, err := readSecret(p+".password_file", s.PasswordFile, strict)
		if err != nil {
			return err
		}
		s.Secrets.RepoPassword, s.Secrets.RepoPasswordFrom = pw, s.PasswordFile
	}
	switch {
	case getenv(PGPasswordEnv(s.Name)) != "":
		s.Secrets.PGPassword, s.Secrets.PGPasswordFrom = getenv(PGPasswordEnv(s.Name)), PGPasswordEnv(s.Name)
	case s.PGPasswordFile != "":
		pw, err := readSecret(p+".pg_password_file", s.PGPasswordFile, strict)
		if err != nil {
			return err
		}
		s.Secrets.PGPassword, s.Secrets.PGPasswordFrom = pw, s.PGPasswordFile
	}
	return nil
}

// readSecret returns the first line of a secret file.
func readSecret(field, path string, strict bool) (string, error) {
	if strict {
		if err := CheckSecretFile(field, path); err != nil {
			return "", err
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return "", fmt.Errorf("%s: %s is empty: write the password on its first line", field, path)
	}
	return line, nil
}

// Redact removes passwords from a conninfo string or URL (and from
// messages that echo one).
func Redact(s string) string {
	fields := strings.Fields(s)
	for i, f := range fields {
		if k, _, ok := strings.Cut(f, "="); ok && strings.EqualFold(strings.TrimSpace(k), "password") {
			fields[i] = "password=REDACTED"
		}
	}
	out := strings.Join(fields, " ")
	if i := strings.Index(out, "://"); i >= 0 {
		rest := out[i+3:]
		if at := strings.Index(rest, "@"); at >= 0 {
			if colon := strings.Index(rest[:at], ":"); colon >= 0 {
				out = out[:i+3] + rest[:colon] + ":REDACTED" + rest[at:]
			}
		}
	}
	if out == strings.Join(strings.Fields(s), " ") {
		return s
	}
	return out
}

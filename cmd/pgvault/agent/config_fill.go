package agent

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/internal/redact"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend/all"
)

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
	if err := c.fillMonitoring(); err != nil {
		return err
	}
	envNames := map[string]string{}
	for _, name := range c.SiteNames() {
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
			return fieldErr(f, "%s", redact.Message(err.Error(), n))
		}
	}
	if s.Repo == "" {
		return fieldErr(p+".repo", "required: the repository URL (file:///path, s3://bucket/prefix?..., gs://bucket/prefix, azure://container/prefix, swift://container/prefix, sftp://user@host/path)")
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
		s.CompressionLevel = chunk.DefaultLevel // one default for the CLI and the agent
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
	sy := &s.Synthetic
	if sy.Interval.D < 0 {
		return fieldErr(p+".synthetic.interval", "%s: use a positive interval, or leave it out for no synthetic backups", sy.Interval.D)
	}
	if sy.Timeout.D == 0 {
		sy.Timeout.D = DefaultSyntheticTimeout
	}
	if sy.Owner == "" {
		sy.Owner = "postgres"
	}
	sy.PGBin = c.abs(sy.PGBin)
	if s.Retention.RealCountMin < 0 {
		return fieldErr(p+".retention.real_basebackup_count_min", "%d: use 0 or more", s.Retention.RealCountMin)
	}
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

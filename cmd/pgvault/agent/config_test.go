package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/chunk"
)

// minimal is the example of the issue and of docs/reference/config.md:
// it must work as is.
const minimal = `sites:
  main:
    pg: "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    repo: file:///var/lib/pgvault/main
    password_file: /etc/pgvault/main.pass
    mode: stream
    basebackup:
      interval_hours: 24
    retention:
      basebackup_count: 2
http:
  listen: 127.0.0.1:9187
state_file: /var/lib/pgvault/state.json
alert_dir: /var/lib/pgvault/alerts
`

func TestParseMinimal(t *testing.T) {
	cfg, err := Parse([]byte(minimal), "/etc/pgvault/pgvault.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Sites["main"]
	if s == nil || s.Name != "main" || len(s.PG) != 1 || s.Mode != "stream" || !s.IsActive() {
		t.Fatalf("site: %+v", s)
	}
	if got := s.Schedule(); got != (Schedule{Interval: 24 * time.Hour, Hour: -1, Minute: -1}) {
		t.Fatalf("schedule %+v", got)
	}
	if p := s.Retention.Policy(); p != (backup.Policy{Count: 2, CountMin: 2}) {
		t.Fatalf("policy %+v", p)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", cfg.HTTP.Listen, "127.0.0.1:9187"},
		{"state_file", cfg.StateFile, "/var/lib/pgvault/state.json"},
		{"alert_dir", cfg.AlertDir, "/var/lib/pgvault/alerts"},
		{"maintenance_mode_file", s.MaintenanceModeFile, DefaultMaintenanceModeFile},
		{"slot", s.Slot, "pgvault"},
		{"compression_level", s.CompressionLevel, chunk.DefaultLevel},
		{"grace", s.Retention.Grace.D, time.Hour},
		{"retention interval", s.Retention.Interval.D, time.Hour},
		{"wal_check", s.WALCheck.Interval.D, time.Hour},
		{"drill", s.Drill.Every(), time.Duration(0)},
		{"drill timeout", s.Drill.Timeout.D, 10 * time.Minute},
		{"upload limit", s.UploadRetriesWarningLimit, 3},
		{"state_interval", cfg.StateInterval.D, 10 * time.Second},
		{"log_level", cfg.LogLevel, "info"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestParseForms(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		check func(t *testing.T, c *Config)
	}{
		{"pg list for failover", `sites: {a: {pg: ["host=db1 user=x", "host=db2 user=x"], repo: /r}}`, func(t *testing.T, c *Config) {
			if len(c.Sites["a"].PG) != 2 {
				t.Fatalf("pg %v", c.Sites["a"].PG)
			}
		}},
		{"finer schedule", `sites: {a: {pg: "host=db", repo: /r, basebackup: {interval: 30s}}}`, func(t *testing.T, c *Config) {
			if got := c.Sites["a"].Schedule().Interval; got != 30*time.Second {
				t.Fatalf("interval %v", got)
			}
		}},
		{"hour and minute", `sites: {a: {pg: "host=db", repo: /r, basebackup: {interval_hours: 6, hour: 1, minute: 30}}}`, func(t *testing.T, c *Config) {
			if got := c.Sites["a"].Schedule(); got != (Schedule{Interval: 6 * time.Hour, Hour: 1, Minute: 30}) {
				t.Fatalf("schedule %+v", got)
			}
		}},
		{"no scheduled backups", `sites: {a: {pg: "host=db", repo: /r, basebackup: {interval_hours: 0}}}`, func(t *testing.T, c *Config) {
			if _, ok := c.Sites["a"].Schedule().Next(time.Time{}, time.Now()); ok {
				t.Fatal("interval_hours 0 still schedules backups")
			}
		}},
		{"null interval: none either, as pghoard", "sites:\n  a:\n    pg: \"host=db\"\n    repo: /r\n    basebackup:\n      interval_hours: null\n", func(t *testing.T, c *Config) {
			if _, ok := c.Sites["a"].Schedule().Next(time.Time{}, time.Now()); ok {
				t.Fatal("interval_hours null still schedules backups")
			}
		}},
		{"absent interval: 24 hours", "sites:\n  a:\n    pg: \"host=db\"\n    repo: /r\n    basebackup: {}\n", func(t *testing.T, c *Config) {
			if got := c.Sites["a"].Schedule().Interval; got != 24*time.Hour {
				t.Fatalf("interval %v", got)
			}
		}},
		{"keep everything", `sites: {a: {pg: "host=db", repo: /r, retention: {basebackup_count: 0, basebackup_count_min: 0}}}`, func(t *testing.T, c *Config) {
			if !c.Sites["a"].Retention.Policy().IsZero() {
				t.Fatalf("policy %+v", c.Sites["a"].Retention.Policy())
			}
		}},
		{"drill and inactive", `sites: {a: {pg: "host=db", repo: /r, active: false, drill: {interval_hours: 24}}}`, func(t *testing.T, c *Config) {
			s := c.Sites["a"]
			if s.IsActive() || s.Drill.Every() != 24*time.Hour || s.Drill.Owner != "postgres" {
				t.Fatalf("site %+v", s)
			}
		}},
		{"relative paths follow the config file", `sites: {a: {pg: "host=db", repo: /r, password_file: pw}}
state_file: st/state.json`, func(t *testing.T, c *Config) {
			if c.StateFile != "/etc/pgvault/st/state.json" || c.Sites["a"].PasswordFile != "/etc/pgvault/pw" {
				t.Fatalf("state %s pw %s", c.StateFile, c.Sites["a"].PasswordFile)
			}
		}},
		{"http off", `sites: {a: {pg: "host=db", repo: /r}}
http: {listen: "off"}`, func(t *testing.T, c *Config) {
			if c.HTTP.Listen != "off" {
				t.Fatal(c.HTTP.Listen)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml), "/etc/pgvault/pgvault.yaml")
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name, yaml string
		field      string // the field the one-line error must name
		text       string // and a word of the explanation
	}{
		{"empty", ``, "sites", "empty"},
		{"no sites", `http: {listen: "127.0.0.1:1"}`, "sites", "no site"},
		{"unknown top field", "sites: {a: {pg: x, repo: /r}}\nstat_file: /x", "stat_file", "unknown field"},
		{"unknown site field", "sites:\n  a:\n    pg: \"host=db\"\n    repo: /r\n    bassebackup: {}\n", "sites.a.bassebackup", "line 5"},
		{"unknown nested field", "sites:\n  a:\n    pg: \"host=db\"\n    repo: /r\n    basebackup:\n      intervl: 1h\n", "sites.a.basebackup.intervl", "interval_hours"},
		{"wrong type", "sites:\n  a:\n    pg: \"host=db\"\n    repo: /r\n    basebackup:\n      interval_hours: often\n", "sites.a.basebackup.interval_hours", "whole number"},
		{"bad duration", "sites:\n  a:\n    pg: \"host=db\"\n    repo: /r\n    basebackup:\n      interval: 30\n", "sites.a.basebackup.interval", "Go duration"},
		{"missing pg", "sites:\n  a:\n    repo: /r\n", "sites.a.pg", "required"},
		{"missing repo", "sites:\n  a:\n    pg: \"host=db\"\n", "sites.a.repo", "required"},
		{"bad repo", "sites:\n  a:\n    pg: \"host=db\"\n    repo: \"ftp://x/y\"\n", "sites.a.repo", "ftp"},
		{"bad mode", "sites:\n  a:\n    pg: \"host=db\"\n    repo: /r\n    mode: push\n", "sites.a.mode", "stream"},
		{"bad site name", "sites:\n  \"a b\":\n    pg: \"host=db\"\n    repo: /r\n", "sites.a b", "letters"},
		{"hour without minute", "sites:\n  a:\n    pg: \"host=db\"\n    repo: /r\n    basebackup: {hour: 3}\n", "sites.a.basebackup.minute", "both"},
		{"bad backup method", "sites:\n  a:\n    pg: \"host=db\"\n    repo: /r\n    basebackup: {method: tar}\n", "sites.a.basebackup.method", "auto, local or stream"},
		{"local and throttled", "sites:\n  a:\n    pg: \"host=db\"\n    repo: /r\n    basebackup: {method: local, max_rate_kb: 1024}\n", "sites.a.basebackup.method", "stream"},
		{"hour out of range", "sites:\n  a:\n    pg: \"host=db\"\n    repo: /r\n    basebackup: {hour: 24, minute: 0}\n", "sites.a.basebackup.hour", "0 to 23"},
		{"grace too short", "sites:\n  a:\n    pg: \"host=db\"\n    repo: /r\n    retention:\n      grace: 1m\n", "sites.a.retention.grace", "15m0s"},
		{"negative count", "sites:\n  a:\n    pg: \"host=db\"\n    repo: /r\n    retention: {basebackup_count: -1}\n", "sites.a.retention.basebackup_count", "negative"},
		{"compression", "sites:\n  a:\n    pg: \"host=db\"\n    repo: /r\n    compression_level: 22\n", "sites.a.compression_level", "19"},
		{"bad conninfo", "sites:\n  a:\n    pg: \"host=db port=notaport\"\n    repo: /r\n", "sites.a.pg", "port"},
		{"bad listen", "sites: {a: {pg: \"host=db\", repo: /r}}\nhttp: {listen: localhost}\n", "http.listen", "host:port"},
		{"bad log level", "sites: {a: {pg: \"host=db\", repo: /r}}\nlog_level: loud\n", "log_level", "debug"},
		{"pg a mapping", "sites:\n  a:\n    pg: {host: db}\n    repo: /r\n", "sites.a.pg", "conninfo"},
		{"not yaml", "sites: [", "", "yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "p.yaml")
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error does not match ErrConfig: %v", err)
			}
			if tc.field != "" && !strings.Contains(msg, ": "+tc.field+" ") && !strings.Contains(msg, ": "+tc.field+":") {
				t.Errorf("error does not name %s: %s", tc.field, msg)
			}
			if !strings.Contains(msg, tc.text) {
				t.Errorf("error does not say %q: %s", tc.text, msg)
			}
		})
	}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestLoadSecrets(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "pgvault.yaml")
	writeFile(t, filepath.Join(dir, "repo.pass"), "from-file\nignored\n", 0o600)
	writeFile(t, filepath.Join(dir, "pg.pass"), "pg-from-file\n", 0o640)
	writeFile(t, conf, `sites:
  main-db:
    pg: "host=db user=pgvault"
    repo: /r
    password_file: repo.pass
    pg_password_file: pg.pass
`, 0o644)
	tests := []struct {
		name       string
		env        map[string]string
		repo, from string
		pg, pgFrom string
	}{
		{"files", nil, "from-file", filepath.Join(dir, "repo.pass"), "pg-from-file", filepath.Join(dir, "pg.pass")},
		{"global env", map[string]string{"PGVAULT_PASSWORD": "g"}, "g", "PGVAULT_PASSWORD", "pg-from-file", filepath.Join(dir, "pg.pass")},
		{"site env wins", map[string]string{"PGVAULT_PASSWORD": "g", "PGVAULT_SITE_MAIN_DB_PASSWORD": "s", "PGVAULT_SITE_MAIN_DB_PGPASSWORD": "p"},
			"s", "PGVAULT_SITE_MAIN_DB_PASSWORD", "p", "PGVAULT_SITE_MAIN_DB_PGPASSWORD"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load(conf, LoadOptions{Strict: true, Getenv: func(k string) string { return tc.env[k] }})
			if err != nil {
				t.Fatal(err)
			}
			sec := cfg.Sites["main-db"].Secrets
			if sec.RepoPassword != tc.repo || sec.RepoPasswordFrom != tc.from || sec.PGPassword != tc.pg || sec.PGPasswordFrom != tc.pgFrom {
				t.Fatalf("secrets %+v", sec)
			}
		})
	}
}

func TestLoadDefaultsFollowStateDirectory(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "db1.yaml")
	writeFile(t, conf, "sites: {db1: {pg: \"host=db\", repo: /r}}\n", 0o600)
	env := map[string]string{"STATE_DIRECTORY": "/var/lib/pgvault/db1:/other"}
	cfg, err := Load(conf, LoadOptions{Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateFile != "/var/lib/pgvault/db1/state.json" || cfg.AlertDir != "/var/lib/pgvault/db1/alerts" ||
		cfg.Sites["db1"].MaintenanceModeFile != "/var/lib/pgvault/db1/maintenance_mode_file" {
		t.Fatalf("defaults under STATE_DIRECTORY: %s %s %s", cfg.StateFile, cfg.AlertDir, cfg.Sites["db1"].MaintenanceModeFile)
	}
}

// TestExampleFileParses keeps the documented example working.
func TestExampleFileParses(t *testing.T) {
	for _, name := range []string{"../../../docs/reference/pgvault.example.yaml"} {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := Parse(data, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(cfg.Sites) < 2 {
			t.Fatalf("%s: %d sites", name, len(cfg.Sites))
		}
	}
}

func TestLoadRefusesWorldReadableSecrets(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "main.pass")
	writeFile(t, pw, "secret\n", 0o644)
	conf := filepath.Join(dir, "pgvault.yaml")
	writeFile(t, conf, "sites:\n  main:\n    pg: \"host=db\"\n    repo: /r\n    password_file: main.pass\n", 0o644)
	noEnv := func(string) string { return "" }
	_, err := Load(conf, LoadOptions{Strict: true, Getenv: noEnv})
	if !errors.Is(err, ErrInsecureSecret) || !strings.Contains(err.Error(), "chmod o-rwx "+pw) || !strings.Contains(err.Error(), "sites.main.password_file") {
		t.Fatalf("world-readable password file: %v", err)
	}
	if _, err := Load(conf, LoadOptions{Getenv: noEnv}); err != nil {
		t.Fatalf("status and doctor must still read it: %v", err)
	}
	os.Chmod(pw, 0o600)
	if _, err := Load(conf, LoadOptions{Strict: true, Getenv: noEnv}); err != nil {
		t.Fatal(err)
	}
	// A password inside a world-readable configuration file.
	writeFile(t, conf, "sites:\n  main:\n    pg: \"host=db password=hunter2\"\n    repo: /r\n", 0o644)
	_, err = Load(conf, LoadOptions{Strict: true, Getenv: noEnv})
	if !errors.Is(err, ErrInsecureSecret) || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("password in a world-readable config: %v", err)
	}
}

// A password in a world-readable configuration file is refused in every
// spelling libpq accepts, and the refusal does not print it.
func TestWorldReadableConfigPasswordSpellings(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "pgvault.yaml")
	for _, pg := range []string{
		`host=db password=hunter2`,
		`host=db password = hunter2`,
		`host=db password =hunter2`,
		`host=db password='hunter2 two'`,
		`host=db password = 'hunter2 two'`,
		`postgres://u:hunter2@db/postgres`,
		`postgres://u@db/postgres?password=hunter2`,
	} {
		writeFile(t, conf, "sites:\n  main:\n    pg: "+strconv.Quote(pg)+"\n    repo: /r\n", 0o644)
		_, err := Load(conf, LoadOptions{Strict: true, Getenv: func(string) string { return "" }})
		if !errors.Is(err, ErrInsecureSecret) {
			t.Errorf("world-readable config with pg %q accepted: %v", pg, err)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("refusal prints the password: %v", err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte("sites: {a: {pg: [\"host=a\", \"host=b\"], repo: /r, basebackup: {interval: 30s, hour: 1, minute: 2}}}"))
	f.Add([]byte("sites:\n  a:\n    pg: x\n    repo: /r\n    retention: {grace: 1h, basebackup_count: 3}\n    drill: {interval: 1m}\n"))
	f.Add([]byte("sites: &x {a: *x}"))
	f.Add([]byte("- 1\n- 2"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, "fuzz.yaml")
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error that is not a ConfigError: %v", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error of more than one line: %q", err)
			}
			return
		}
		if len(cfg.Sites) == 0 {
			t.Fatal("a configuration without sites parsed")
		}
		for name, s := range cfg.Sites {
			if s.Name != name || len(s.PG) == 0 || s.Repo == "" || (s.Mode != "stream" && s.Mode != "archive") {
				t.Fatalf("site %q not validated: %+v", name, s)
			}
			if s.Retention.Grace.D < 15*time.Minute {
				t.Fatalf("grace %v below the reuse window", s.Retention.Grace.D)
			}
		}
	})
}

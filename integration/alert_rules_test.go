package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/pgtest"
	"github.com/pgvault/pgvault/integration/promtool"
)

// The monitoring documents of docs/monitoring, checked with promtool and
// evaluated against a real agent's /metrics.
const (
	monitoringRules     = "../docs/monitoring/alerts.yml"
	monitoringDashboard = "../docs/monitoring/grafana-dashboard.json"
)

// TestMonitoringRulesPassPromtool: `promtool check rules` accepts the
// alerting rules, and the Grafana dashboard's queries, with its variables
// replaced, are valid PromQL (promtool checks them as recording rules).
func TestMonitoringRulesPassPromtool(t *testing.T) {
	out, err := promtool.Run("check", "rules", monitoringRules)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", strings.TrimSpace(out))

	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	queries := dashboardQueries(t, ".*")
	for _, q := range queries {
		fmt.Fprintf(&rules, "      # panel %q\n      - record: %s\n        expr: %q\n", q.panel, q.name, q.expr)
	}
	file := filepath.Join(t.TempDir(), "dashboard-queries.yml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := promtool.Run("check", "rules", file); err != nil {
		t.Fatalf("the dashboard's queries: %v", err)
	}
	t.Logf("%d dashboard queries parse", len(queries))
}

// dashboardQuery is a query of the Grafana dashboard with its variables
// replaced.
// TestMonitoringAlertsOnRealAgent runs a real agent on a real cluster,
// scrapes its /metrics when healthy and in real unhealthy states
// (maintenance mode, PostgreSQL stopped, the agent stopped, its storage
// failing), and has
// `promtool test rules` evaluate docs/monitoring/alerts.yml on those
// scrapes held over time: on the healthy agent no alert fires, each
// unhealthy state fires exactly the alerts it should, with the site.
// Then each rule is broken on purpose (never firing, always firing) to
// prove the expectations would catch a wrong expression.
func TestMonitoringAlertsOnRealAgent(t *testing.T) {
	if _, err := promtool.Binary(); err != nil {
		t.Fatal(err)
	}
	rules, rulesData := readMonitoringRules(t, monitoringRules)
	began := time.Now()
	c := pgtest.Start(t, pgtest.Options{})
	v := newPostgresVault(t)
	s := newAgentSetup(t, c, v)
	const walCheck = `
    wal_check:
      interval: 2s`
	const schedule = `    basebackup:
      interval: 1h
      fast_checkpoint: true` + walCheck

	// No backup yet: the agent on a site with no schedule (interval 0
	// takes not even a first backup), streaming.
	s.write(t, c.ConnString("postgres"), "    basebackup:\n      interval_hours: 0"+walCheck)
	a := s.start(t)
	st := a.waitState("the agent's listener", 30*time.Second, func(st agentState) bool { return st.HTTPListen != "" })
	addr := st.HTTPListen
	noBackup := waitScrape(t, a, addr, "pgvault_backups 0 with the streamer connected", 60*time.Second, func(m map[string]string) bool {
		return m[`pgvault_backups{site="main"}`] == "0" && m[`pgvault_streamer_connected{site="main"}`] == "1"
	})

	// Healthy: a backup, the streamer connected, a WAL check and the PITR
	// window computed, so that every rule has its metric to look at.
	s.write(t, c.ConnString("postgres"), schedule)
	a.hup()
	a.waitState("the first backup, the streamer, a WAL check and the PITR window", 90*time.Second, func(st agentState) bool {
		ss := st.Sites["main"]
		return ss.Backup.Count >= 1 && !ss.Backup.Running && ss.Streamer != nil && ss.Streamer.Connected && ss.WALCheck.Last != nil && ss.WALCheck.OK && ss.PITR != nil
	})
	healthy := scrapeAgent(t, addr)
	for _, name := range []string{
		`pgvault_backups{site="main"}`, `pgvault_last_backup_timestamp_seconds{site="main"}`, `pgvault_streamer_connected{site="main"}`,
		`pgvault_wal_lag_bytes{site="main"}`, `pgvault_wal_missing_segments{site="main"}`, `pgvault_wal_check_last_timestamp_seconds{site="main"}`,
		`pgvault_upload_errors_total{site="main"}`, `pgvault_backup_failures_total{site="main"}`, `pgvault_maintenance_mode{site="main"}`,
		`pgvault_alert{alert="wal_gap",site="main"}`,
	} {
		if _, ok := healthy.samples[name]; !ok {
			t.Fatalf("the healthy agent's /metrics lacks %s: its rules would test nothing", name)
		}
	}

	// A WAL gap: the catalogue entry of the segment the backup starts in
	// moved aside (as TestAgentBacksUpStreamsPrunesAndStops does), once
	// newer WAL is stored; then back.
	c.Exec(t, "CREATE TABLE monitoring_wal AS SELECT generate_series(1, 10000) AS n")
	c.SwitchWAL(t)
	waitStored(t, c, "pgvault")
	var list []listedBackup
	v.json(&list, "list")
	if len(list) != 1 {
		t.Fatalf("backups: %+v", list)
	}
	from := lsn(t, list[0].StartLSN)
	seg := fmt.Sprintf("%08X%08X%08X", 1, uint64(from)>>32, (uint64(from)&0xffffffff)>>24)
	segFile := filepath.Join(v.repo, "wal", "00000001", seg)
	aside := filepath.Join(s.dir, seg+".aside")
	if err := os.Rename(segFile, aside); err != nil {
		t.Fatalf("move WAL catalogue entry %s aside: %v", seg, err)
	}
	walGap := waitScrape(t, a, addr, "the WAL gap in /metrics", 30*time.Second, func(m map[string]string) bool {
		return m[`pgvault_wal_missing_segments{site="main"}`] != "0" && m[`pgvault_alert{alert="wal_gap",site="main"}`] == "1"
	})
	if err := os.Rename(aside, segFile); err != nil {
		t.Fatal(err)
	}
	waitScrape(t, a, addr, "the WAL gap closed in /metrics", 30*time.Second, func(m map[string]string) bool {
		return m[`pgvault_wal_missing_segments{site="main"}`] == "0" && m[`pgvault_alert{alert="wal_gap",site="main"}`] == "0"
	})

	// Maintenance mode: the file, seen by the agent.
	if err := os.WriteFile(s.maint, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a.waitState("maintenance mode", 10*time.Second, func(st agentState) bool { return st.Sites["main"].Maintenance })
	maintenance := scrapeAgent(t, addr)
	os.Remove(s.maint)
	a.waitState("maintenance mode over", 10*time.Second, func(st agentState) bool { return !st.Sites["main"].Maintenance })

	// PostgreSQL stopped: the streamer loses its connection.
	c.Stop(t, "fast")
	a.waitState("the streamer disconnected", 30*time.Second, func(st agentState) bool {
		ss := st.Sites["main"]
		return ss.Streamer != nil && !ss.Streamer.Connected
	})
	pgDown := scrapeAgent(t, addr)
	if pgDown.samples[`pgvault_streamer_connected{site="main"}`] != "0" {
		t.Fatalf("pgvault_streamer_connected with PostgreSQL stopped: %q", pgDown.samples[`pgvault_streamer_connected{site="main"}`])
	}

	// PostgreSQL back: the streamer reconnects.
	c.Start(t)
	a.waitState("the streamer reconnected", 60*time.Second, func(st agentState) bool {
		ss := st.Sites["main"]
		return ss.Streamer != nil && ss.Streamer.Connected
	})

	// A recovery drill that fails: its query names no table of the
	// cluster (as TestAgentArchiveModeDrill does).
	s.write(t, c.ConnString("postgres"), schedule+`
    drill:
      interval: 1h
      timeout: 2m
      sql: "SELECT count(*) FROM no_such_table"`)
	a.hup()
	drillFailed := waitScrape(t, a, addr, "a failed drill in /metrics", 3*time.Minute, func(m map[string]string) bool {
		return m[`pgvault_drill_success{site="main"}`] == "0"
	})

	// The agent stopped: the scrape fails.
	if code, _ := a.stop(); code != 0 {
		t.Fatalf("agent exited %d", code)
	}
	agentDown := scrapeAgent(t, addr)
	if agentDown.up {
		t.Fatal("a scrape of the stopped agent succeeded")
	}

	// Storage failing: the agent again, on a 2 s backup schedule, with
	// every upload of a backup manifest failing (the test build's fault
	// injection: a truncated write, then an error; two attempts each;
	// only saves, so that listing and reading the repository, which the
	// streamer needs, go on). Its next backup fails when it stores the
	// manifest: the agent counts the give-up and the failed backup and
	// raises upload_retries_warning, while WAL streams on.
	s.write(t, c.ConnString("postgres"), `    basebackup:
      interval: 2s
      fast_checkpoint: true`+walCheck)
	b := s.start(t, "PGVAULT_TEST_FAULTS=partial=1,types=snapshot,attempts=2,delay=10ms")
	st = b.waitState("the second agent's listener", 30*time.Second, func(st agentState) bool { return st.PID == b.cmd.Process.Pid })
	uploadsFail := waitScrape(t, b, st.HTTPListen, "a failed backup and upload, and upload_retries_warning, with the streamer connected", 90*time.Second, func(m map[string]string) bool {
		return m[`pgvault_backup_failures_total{site="main"}`] != "0" && m[`pgvault_upload_errors_total{site="main"}`] != "0" &&
			m[`pgvault_alert{alert="upload_retries_warning",site="main"}`] == "1" && m[`pgvault_streamer_connected{site="main"}`] == "1"
	})
	t.Logf("storage failing: %s upload errors, %s failed backups",
		uploadsFail.samples[`pgvault_upload_errors_total{site="main"}`], uploadsFail.samples[`pgvault_backup_failures_total{site="main"}`])
	if code, _ := b.stop(); code != 0 {
		t.Fatalf("the second agent exited %d", code)
	}

	t.Logf("scraped the agent without a backup, healthy, with a WAL gap, in maintenance mode, with PostgreSQL stopped, after a failed drill, stopped, and with uploads failing in %.1fs", time.Since(began).Seconds())
	base := healthy.at
	// Scenarios over minutes sample every minute, so that the edges of
	// for: are exact; those over days every 15 minutes or 6 hours
	// (promtool evaluates every rule at every step: 37 hours at 1m took
	// 6 s a run), evaluated only at sample times (a sample is seen for 5
	// minutes) and with samples beyond the last evaluation.
	scenarios := []scenario{{
		name:  "healthy agent",
		step:  time.Minute,
		segs:  []segment{{healthy, 120}},
		evals: []evalCase{{at: 10 * time.Minute}, {at: 30 * time.Minute}, {at: 2 * time.Hour}},
	}, {
		// for: 5m from the first scrape that shows the streamer down (10m).
		name: "PostgreSQL stopped",
		step: time.Minute,
		segs: []segment{{healthy, 10}, {pgDown, 30}},
		evals: []evalCase{
			{at: 14 * time.Minute},
			{at: 16 * time.Minute, firing: []firing{siteAlert("PgvaultWALStreamingDown")}},
			{at: 39 * time.Minute, firing: []firing{siteAlert("PgvaultWALStreamingDown")}},
		},
	}, {
		name: "agent stopped",
		step: time.Minute,
		segs: []segment{{healthy, 10}, {agentDown, 20}},
		evals: []evalCase{
			{at: 14 * time.Minute},
			{at: 16 * time.Minute, firing: []firing{{alert: "PgvaultAgentDown"}}},
		},
	}, {
		// pgvault_backups 0 from 0m: for: 1h.
		name:  "no backup",
		step:  time.Minute,
		segs:  []segment{{noBackup, 90}},
		evals: []evalCase{{at: 30 * time.Minute}, {at: 59 * time.Minute}, {at: 61 * time.Minute, firing: []firing{siteAlert("PgvaultNoBackup")}}},
	}, {
		// The missing segment counts from 10m: for: 1m.
		name: "WAL gap",
		step: time.Minute,
		segs: []segment{{healthy, 10}, {walGap, 20}},
		evals: []evalCase{
			{at: 10 * time.Minute},
			{at: 12 * time.Minute, firing: []firing{siteAlert("PgvaultWALGap")}},
		},
	}, {
		name: "drill failed",
		step: time.Minute,
		segs: []segment{{healthy, 10}, {drillFailed, 20}},
		evals: []evalCase{
			{at: 10 * time.Minute},
			{at: 12 * time.Minute, firing: []firing{siteAlert("PgvaultDrillFailed")}},
		},
	}, {
		// The failed upload and backup count at 10m: for: 1m.
		// upload_retries_warning is the agent's own alert: for: 5m.
		name: "uploads failing",
		step: time.Minute,
		segs: []segment{{healthy, 10}, {uploadsFail, 30}},
		evals: []evalCase{
			{at: 10 * time.Minute},
			{at: 12 * time.Minute, firing: []firing{siteAlert("PgvaultUploadErrors"), siteAlert("PgvaultBackupFailed")}},
			{at: 16 * time.Minute, firing: []firing{siteAlert("PgvaultUploadErrors"), siteAlert("PgvaultBackupFailed"),
				{alert: "PgvaultAgentAlert", labels: map[string]string{"site": "main", "alert": "upload_retries_warning"}}}},
		},
	}, {
		// The healthy scrape held for 37 hours, as if the agent's jobs had
		// stopped while it kept answering: the WAL check passes its 3 h
		// and the backup its 36 h (each then for: 15m).
		name: "healthy scrape frozen for 37h",
		step: 15 * time.Minute,
		segs: []segment{{healthy, 38 * 4}},
		evals: []evalCase{
			{at: 3 * time.Hour},
			{at: 3*time.Hour + 30*time.Minute, firing: []firing{siteAlert("PgvaultWALCheckStale")}},
			{at: 36 * time.Hour, firing: []firing{siteAlert("PgvaultWALCheckStale")}},
			{at: 37 * time.Hour, firing: []firing{siteAlert("PgvaultWALCheckStale"), siteAlert("PgvaultBackupTooOld")}},
		},
	}, {
		// The failed drill's scrape held for 15 days: no drill since
		// (14 days, then for: 1h, so one 6 h step later), besides the WAL
		// check's and the backup's age.
		name: "drill failed, then none for 15 days",
		step: 6 * time.Hour,
		segs: []segment{{drillFailed, 16 * 4}},
		evals: []evalCase{
			{at: 14 * 24 * time.Hour, firing: []firing{siteAlert("PgvaultDrillFailed"), siteAlert("PgvaultWALCheckStale"), siteAlert("PgvaultBackupTooOld")}},
			{at: 15 * 24 * time.Hour, firing: []firing{siteAlert("PgvaultDrillFailed"), siteAlert("PgvaultWALCheckStale"), siteAlert("PgvaultBackupTooOld"), siteAlert("PgvaultDrillOverdue")}},
		},
	}, {
		// Maintenance mode from 15m, for: 24h.
		name: "maintenance mode for a day",
		step: 15 * time.Minute,
		segs: []segment{{healthy, 1}, {maintenance, 26 * 4}},
		evals: []evalCase{
			{at: 1 * time.Hour},
			{at: 24 * time.Hour, firing: []firing{siteAlert("PgvaultWALCheckStale")}},
			{at: 24*time.Hour + 30*time.Minute, firing: []firing{siteAlert("PgvaultWALCheckStale"), siteAlert("PgvaultMaintenanceModeLong")}},
		},
	}}

	dir := t.TempDir()
	// testFiles writes one promtool test file per step (the evaluation
	// interval is per file), for the rules at rulesPath.
	testFiles := func(rulesPath string) []string {
		var steps []time.Duration
		for _, sc := range scenarios {
			if !slices.Contains(steps, sc.step) {
				steps = append(steps, sc.step)
			}
		}
		var files []string
		for _, step := range steps {
			var group []scenario
			for _, sc := range scenarios {
				if sc.step == step {
					group = append(group, sc)
				}
			}
			file := filepath.Join(dir, fmt.Sprintf("alerts_test_%v.yml", step))
			if err := os.WriteFile(file, promtoolTest(t, rulesPath, rules, addr, base, group), 0o644); err != nil {
				t.Fatal(err)
			}
			files = append(files, file)
		}
		return files
	}
	run := func(rulesPath string) (string, error) {
		return promtool.Run(append([]string{"test", "rules"}, testFiles(rulesPath)...)...)
	}
	// caught reports whether any test file fails on the rules at
	// rulesPath, running one file at a time and stopping at the first
	// failure (most mutants fail the first).
	caught := func(rulesPath string) bool {
		for _, f := range testFiles(rulesPath) {
			if _, err := promtool.Run("test", "rules", f); err != nil {
				return true
			}
		}
		return false
	}
	rulesAbs, err := filepath.Abs(monitoringRules)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if out, err := run(rulesAbs); err != nil {
		t.Fatalf("the rules on the real agent's metrics: %v", err)
	} else {
		t.Logf("promtool test rules (%.1fs): %s", time.Since(t0).Seconds(), strings.TrimSpace(out))
	}

	// Mutants: each rule made to never fire, and to always fire (an
	// alert without labels). The scenarios must reject every mutant
	// whose behaviour they observe: each rule is asserted not to fire
	// somewhere, and those the scenarios expect to fire must.
	expected := map[string]bool{}
	for _, sc := range scenarios {
		for _, ev := range sc.evals {
			for _, f := range ev.firing {
				expected[f.alert] = true
			}
		}
	}
	var mutants []struct{ rule, kind, expr string }
	var unseen []string
	for _, r := range rules {
		mutants = append(mutants, struct{ rule, kind, expr string }{r.Alert, "always", "(" + r.Expr + ") or on() vector(1)"})
		if expected[r.Alert] {
			mutants = append(mutants, struct{ rule, kind, expr string }{r.Alert, "never", "(" + r.Expr + ") unless on() vector(1)"})
		} else {
			unseen = append(unseen, r.Alert)
		}
	}
	t0 = time.Now()
	for _, m := range mutants {
		r := rules[slices.IndexFunc(rules, func(r monitoringRule) bool { return r.Alert == m.rule })]
		old := "expr: " + r.Expr + "\n"
		if strings.Count(string(rulesData), old) != 1 {
			t.Fatalf("rule %s: its expr line is not unique in %s", r.Alert, monitoringRules)
		}
		mutant := filepath.Join(dir, "mutant.yml")
		if err := os.WriteFile(mutant, []byte(strings.Replace(string(rulesData), old, "expr: "+strconv.Quote(m.expr)+"\n", 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		if !caught(mutant) {
			t.Errorf("rule %s made to %s fire: the scenarios did not notice", m.rule, m.kind)
		}
	}
	t.Logf("%d mutants of the rules rejected in %.1fs; no scenario makes these fire (asserted silent only): %v", len(mutants), time.Since(t0).Seconds(), unseen)

	dashboardOnScrape(t, dir, addr, healthy)
}

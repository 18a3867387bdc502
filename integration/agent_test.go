package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// lockedBuffer collects a process's output while tests read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// agentProc is a running `pgvault agent`.
type agentProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	log     *lockedBuffer
	conf    string
	state   string
	alerts  string
	waitErr chan error
}

// agentSetup is where an agent test keeps its files.
type agentSetup struct {
	dir    string // postgres-owned folder of the vault
	conf   string
	state  string
	alerts string
	maint  string
	cache  string
	pgPass string
	repo   string
	pw     string
	mode   string
}

func newAgentSetup(t *testing.T, c *pgtest.Cluster, v *vault) *agentSetup {
	return agentSetupIn(v.base, v.repo, v.pwFile)
}

func agentSetupIn(dir, repo, pw string) *agentSetup {
	return &agentSetup{
		dir: dir, conf: filepath.Join(dir, "pgvault.yaml"), state: filepath.Join(dir, "state", "state.json"),
		alerts: filepath.Join(dir, "alerts"), maint: filepath.Join(dir, "maintenance"), cache: filepath.Join(dir, "agent-cache"),
		repo: repo, pw: pw, mode: "stream",
	}
}

// write writes the agent configuration: the site "main" with the given
// YAML lines for its basebackup, retention, drill and extra fields.
func (s *agentSetup) write(t *testing.T, pg string, siteExtra string) {
	t.Helper()
	conf := fmt.Sprintf(`# written by integration/agent_test.go
sites:
  main:
    pg: %q
    repo: %s
    password_file: %s
    mode: %s
    maintenance_mode_file: %s
    cache_dir: %s
%s
http:
  listen: 127.0.0.1:0
state_file: %s
alert_dir: %s
state_interval: 1s
stats_interval: 1s
`, pg, s.repo, s.pw, s.mode, s.maint, s.cache, siteExtra, s.state, s.alerts)
	if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
}

// start runs the agent on the configuration, with extra environment.
func (s *agentSetup) start(t *testing.T, env ...string) *agentProc {
	t.Helper()
	cmd := exec.Command(pgvaultBin, "--log-level", "info", "agent", "--config", s.conf)
	cmd.Env = append(filteredEnv(), env...)
	a := &agentProc{t: t, cmd: cmd, log: &lockedBuffer{}, conf: s.conf, state: s.state, alerts: s.alerts, waitErr: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = a.log, a.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.waitErr <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-a.waitErr
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", a.log)
		}
	})
	return a
}

// stop sends SIGTERM and returns the exit code and how long it took.
func (a *agentProc) stop() (int, time.Duration) {
	a.t.Helper()
	start := time.Now()
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-a.waitErr:
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			a.t.Fatal(err)
		}
		return code, time.Since(start)
	case <-time.After(60 * time.Second):
		a.t.Fatalf("agent did not stop within 60 s of SIGTERM")
	}
	return 0, 0
}

func (a *agentProc) hup() {
	a.t.Helper()
	if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		a.t.Fatal(err)
	}
}

// agentState is the part of the state document the tests read.
type agentState struct {
	PID         int       `json:"pid"`
	HTTPListen  string    `json:"http_listen"`
	Updated     time.Time `json:"updated"`
	ReloadError string    `json:"reload_error"`
	Sites       map[string]struct {
		Maintenance bool `json:"maintenance"`
		Streamer    *struct {
			Connected bool   `json:"connected"`
			Received  string `json:"received_lsn"`
			Flushed   string `json:"flushed_lsn"`
			Restarts  int    `json:"restarts"`
		} `json:"streamer"`
		Backup struct {
			Running   bool   `json:"running"`
			Count     int    `json:"count"`
			Taken     int    `json:"taken"`
			LastError string `json:"last_error"`
			Last      *struct {
				ID    string    `json:"id"`
				Start time.Time `json:"start"`
				End   time.Time `json:"end"`
			} `json:"last"`
			Next *time.Time `json:"next"`
		} `json:"backup"`
		Prune struct {
			Last           *time.Time `json:"last"`
			Runs           int        `json:"runs"`
			BackupsRemoved int        `json:"backups_removed"`
			WALRemoved     int        `json:"wal_removed"`
			BytesFreed     int64      `json:"bytes_freed"`
		} `json:"prune"`
		WALCheck struct {
			Last *time.Time `json:"last"`
			OK   bool       `json:"ok"`
		} `json:"wal_check"`
		Drill struct {
			Last    *time.Time `json:"last"`
			OK      *bool      `json:"ok"`
			Message string     `json:"message"`
		} `json:"drill"`
		Synthetic struct {
			Last      *time.Time `json:"last"`
			Enabled   bool       `json:"enabled"`
			Taken     int        `json:"taken"`
			Backup    string     `json:"backup"`
			Parent    string     `json:"parent"`
			LastError string     `json:"last_error"`
		} `json:"synthetic"`
		PITR *struct {
			Earliest time.Time `json:"earliest"`
			Latest   time.Time `json:"latest"`
			Seconds  float64   `json:"seconds"`
		} `json:"pitr"`
		Uploads struct {
			Errors  int `json:"errors"`
			Retries int `json:"retries"`
		} `json:"uploads"`
		WriteOnly bool `json:"write_only"`
	} `json:"sites"`
}

// readState reads the state file (zero value until it exists).
func (a *agentProc) readState() agentState {
	var st agentState
	if data, err := os.ReadFile(a.state); err == nil {
		json.Unmarshal(data, &st)
	}
	return st
}

// waitState waits until the state file shows cond; the agent exiting
// meanwhile fails the test at once.
func (a *agentProc) waitState(what string, timeout time.Duration, cond func(agentState) bool) agentState {
	a.t.Helper()
	var st agentState
	waitFor(a.t, timeout, what, func() (bool, error) {
		a.exited(what)
		st = a.readState()
		if st.Sites != nil && cond(st) {
			return true, nil
		}
		data, _ := os.ReadFile(a.state)
		return false, fmt.Errorf("state:\n%s", data)
	})
	return st
}

// exited fails the test if the agent has exited, naming what the test
// was waiting for.
func (a *agentProc) exited(what string) {
	a.t.Helper()
	select {
	case err := <-a.waitErr:
		a.waitErr <- err
		a.t.Fatalf("agent exited (%v) while waiting for %s", err, what)
	default:
	}
}

// metrics scrapes /metrics and returns the series of site main by name.
func (a *agentProc) metrics() map[string]float64 {
	a.t.Helper()
	st := a.readState()
	resp, err := http.Get("http://" + st.HTTPListen + "/metrics")
	if err != nil {
		a.t.Fatalf("scrape /metrics: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok := strings.Cut(line, "{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok || !strings.Contains(labels, `site="main"`) {
			continue
		}
		key := name
		if strings.HasPrefix(labels, `alert="`) {
			key += "/" + strings.TrimSuffix(strings.TrimPrefix(strings.Split(labels, ",")[0], `alert="`), `"`)
		}
		v, err := strconv.ParseFloat(value, 64)
		if err == nil {
			out[key] = v
		}
	}
	return out
}

func lsn(t *testing.T, s string) pglogrepl.LSN {
	t.Helper()
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatalf("LSN %q: %v", s, err)
	}
	return l
}

func near(a, b, tol float64) bool { return a-b <= tol && b-a <= tol }

type listedBackup struct {
	ID       string    `json:"id"`
	StopTime time.Time `json:"stop_time"`
	Bytes    int64     `json:"bytes"`
	StartLSN string    `json:"start_lsn"`
}

// TestAgentBacksUpStreamsPrunesAndStops runs the real agent with a short
// schedule against a real cluster: the first backup at once, SIGHUP to a
// finer schedule, the maintenance-mode file holding
// backups off, retention by count with the streamer running (and packs
// aged past prune's grace), metrics and status, and SIGTERM after the
// streamer stored the WAL; then restores of the oldest retained backup
// and of the latest prove that nothing a retained backup needs was lost.
func TestAgentBacksUpStreamsPrunesAndStops(t *testing.T) {
	start := time.Now()
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 1)
	c.CreateMarkers(t)
	v := newPostgresVault(t)
	s := newAgentSetup(t, c, v)
	const interval = 4 * time.Second
	siteConf := func(backupInterval string) string {
		return fmt.Sprintf(`    basebackup:
      interval: %s
      fast_checkpoint: true
    retention:
      basebackup_count: 2
      grace: 15m
    wal_check:
      interval: 2s`, backupInterval)
	}
	s.write(t, c.ConnString("postgres"), siteConf("1h"))
	a := s.start(t)

	var want []int64
	mark := func(n int, note string) pgtest.Marker {
		var m pgtest.Marker
		for i := range n {
			m = c.InsertMarker(t, fmt.Sprintf("%s %d", note, i))
			want = append(want, m.ID)
		}
		return m
	}
	mark(3, "before the agent's first backup")

	// A site with no backup gets one at once, and with a 1h schedule no
	// second one follows: the agent schedules the next an hour after the
	// first (its state says when) and has taken no other meanwhile.
	st := a.waitState("the first backup", 60*time.Second, func(st agentState) bool { return st.Sites["main"].Backup.Count >= 1 })
	first := st.Sites["main"].Backup.Last.ID
	t.Logf("first backup %s after %.1fs", first[:8], time.Since(start).Seconds())
	// (Until the worker looks again, next is still when the first was due.)
	st = a.waitState("the next backup scheduled", 10*time.Second, func(st agentState) bool {
		b := st.Sites["main"].Backup
		return b.Last != nil && b.Next != nil && b.Next.After(b.Last.Start) || b.Count != 1
	})
	b := st.Sites["main"].Backup
	if b.Count != 1 || b.Last.ID != first {
		t.Fatalf("with a 1h schedule the agent took %d backups", b.Count)
	}
	if d := b.Next.Sub(b.Last.Start); !near(d.Seconds(), time.Hour.Seconds(), 1) {
		t.Fatalf("with a 1h schedule the next backup is due %v after the first", d)
	}
	mark(3, "after the first backup")

	// SIGHUP applies a finer schedule: the second backup follows at once
	// (its interval since the first has passed), without restarting the
	// streamer.
	s.write(t, c.ConnString("postgres"), siteConf(interval.String()))
	hupAt := time.Now()
	a.hup()
	st = a.waitState("a backup on the new schedule", 30*time.Second, func(st agentState) bool { return st.Sites["main"].Backup.Count >= 2 })
	t.Logf("second backup %.1fs after SIGHUP", time.Since(hupAt).Seconds())
	if log := a.log.String(); !strings.Contains(log, "restart_streamer=false restart_jobs=true") || strings.Contains(log, "restart_streamer=true") {
		t.Fatalf("a schedule change must restart the jobs but not the streamer; log:\n%s", log)
	}

	// The maintenance-mode file holds new backups off.
	os.WriteFile(s.maint, nil, 0o644)
	maintAt := time.Now()
	a.waitState("maintenance mode", 10*time.Second, func(st agentState) bool { return st.Sites["main"].Maintenance })
	ids := []string{}
	var list []listedBackup
	v.json(&list, "list")
	for _, b := range list {
		ids = append(ids, b.ID)
	}
	if len(ids) != 2 || ids[0] != first {
		t.Fatalf("backups before maintenance: %v", ids)
	}
	// Meanwhile: load, markers, WAL switches, and packs aged past prune's
	// grace, so that retention has WAL and data to remove.
	c.Pgbench(context.Background(), t, "-c", "2", "-t", "200")
	mark(5, "during maintenance")
	c.SwitchWAL(t)
	waitStored(t, c, "pgvault")
	if n := ageRepo(t, v.repo); n == 0 {
		t.Fatal("no repository objects to age")
	}
	// The next backup falls due during maintenance; the worker looks at
	// the file every second while a job is due (maintenancePoll). Two
	// seconds past due, it has declined to start the backup at least once.
	st = a.waitState("a backup due for 2 s in maintenance mode", 2*interval+time.Second, func(st agentState) bool {
		b := st.Sites["main"].Backup
		due := b.Last != nil && b.Next != nil && b.Next.After(b.Last.Start) && st.Updated.Sub(*b.Next) >= 2*time.Second
		return st.Sites["main"].Maintenance && due || b.Running || b.Count != 2
	})
	if b := st.Sites["main"].Backup; b.Count != 2 || b.Running {
		t.Fatalf("a backup started in maintenance mode (count %d, running %v)", b.Count, b.Running)
	}
	t.Logf("maintenance mode held off a backup due %.1fs after the file appeared", st.Sites["main"].Backup.Next.Sub(maintAt).Seconds())
	if m := a.metrics(); m["pgvault_maintenance_mode"] != 1 {
		t.Fatalf("pgvault_maintenance_mode = %v", m["pgvault_maintenance_mode"])
	}

	// Leaving maintenance: the third backup, then retention drops the
	// first while the streamer keeps writing under load.
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for {
			select {
			case <-stopLoad:
				return
			default:
			}
			c.Pgbench(context.Background(), t, "-c", "2", "-t", "50")
		}
	}()
	os.Remove(s.maint)
	st = a.waitState("retention after the third backup", 60*time.Second, func(st agentState) bool {
		ss := st.Sites["main"]
		return ss.Backup.Taken >= 3 && ss.Prune.BackupsRemoved >= 1 && !ss.Backup.Running
	})
	close(stopLoad)
	<-loadDone
	// Hold further backups off again, so that the figures checked below
	// stay put (the schedule would take one every few seconds).
	os.WriteFile(s.maint, nil, 0o644)
	st = a.waitState("maintenance mode with no backup running", 60*time.Second, func(st agentState) bool {
		return st.Sites["main"].Maintenance && !st.Sites["main"].Backup.Running
	})
	pr := st.Sites["main"].Prune
	t.Logf("retention removed %d backups and %d WAL files, freed %d bytes", pr.BackupsRemoved, pr.WALRemoved, pr.BytesFreed)
	if pr.BytesFreed == 0 || pr.WALRemoved == 0 {
		t.Fatalf("retention freed nothing: %+v", pr)
	}
	mark(5, "after prune")
	list = nil
	v.json(&list, "list")
	if len(list) != 2 || slices.ContainsFunc(list, func(b listedBackup) bool { return b.ID == first }) {
		t.Fatalf("after retention: %+v (before: %v)", list, ids)
	}
	oldest, newest := list[0], list[1]

	// Metrics and status report what the repository holds.
	waitStored(t, c, "pgvault")
	st = a.waitState("the figures of the newest backup", 10*time.Second, func(st agentState) bool {
		ss := st.Sites["main"]
		return ss.Backup.Last != nil && ss.Backup.Last.ID == newest.ID && ss.PITR != nil && ss.WALCheck.Last != nil && ss.WALCheck.OK
	})
	m := a.metrics()
	var stats struct {
		StoredBytes int64 `json:"stored_bytes"`
	}
	v.json(&stats, "repo", "stats")
	now := float64(time.Now().UnixNano()) / 1e9
	for _, chk := range []struct {
		name string
		ok   bool
	}{
		{"pgvault_last_backup_timestamp_seconds", near(m["pgvault_last_backup_timestamp_seconds"], float64(newest.StopTime.UnixNano())/1e9, 1)},
		{"pgvault_last_backup_duration_seconds", m["pgvault_last_backup_duration_seconds"] > 0 && m["pgvault_last_backup_duration_seconds"] < 60},
		{"pgvault_backup_bytes", m["pgvault_backup_bytes"] == float64(newest.Bytes) && newest.Bytes > 0},
		{"pgvault_wal_lag_bytes", m["pgvault_wal_lag_bytes"] >= 0 && m["pgvault_wal_lag_bytes"] < 16<<20},
		{"pgvault_wal_last_archived_timestamp_seconds", near(m["pgvault_wal_last_archived_timestamp_seconds"], now, 10)},
		{"pgvault_upload_errors_total", m["pgvault_upload_errors_total"] == 0},
		{"pgvault_repo_stored_bytes", near(m["pgvault_repo_stored_bytes"], float64(stats.StoredBytes), 0.25*float64(stats.StoredBytes))},
		{"pgvault_pitr_window_seconds", near(m["pgvault_pitr_window_seconds"], m["pgvault_pitr_latest_timestamp_seconds"]-float64(oldest.StopTime.UnixNano())/1e9, 0.01) && m["pgvault_pitr_window_seconds"] > 0},
		{"pgvault_pitr_latest_timestamp_seconds", near(m["pgvault_pitr_latest_timestamp_seconds"], now, 10)},
		{"pgvault_backups", m["pgvault_backups"] == 2},
		{"pgvault_streamer_connected", m["pgvault_streamer_connected"] == 1},
		{"pgvault_alert/wal_gap", m["pgvault_alert/wal_gap"] == 0},
	} {
		if !chk.ok {
			t.Errorf("%s = %v is wrong (metrics: %v; newest %+v, oldest %+v, repo stats %d)", chk.name, m[chk.name], m, newest, oldest, stats.StoredBytes)
		}
	}
	var status statusDoc
	if r := v.run("--output", "json", "status", "--config", s.conf); r.code != 0 || json.Unmarshal([]byte(r.stdout), &status) != nil {
		t.Fatalf("status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	checkStatus(t, status, true, newest.ID, oldest.StopTime)

	// A WAL segment a retained backup needs goes missing: wal_gap starts;
	// it comes back: wal_gap ends.
	start2 := lsn(t, newest.StartLSN)
	seg := fmt.Sprintf("%08X%08X%08X", 1, uint64(start2)>>32, (uint64(start2)&0xffffffff)>>24)
	segFile := filepath.Join(v.repo, "wal", "00000001", seg)
	aside := filepath.Join(s.dir, seg+".aside")
	if err := os.Rename(segFile, aside); err != nil {
		t.Fatalf("move WAL catalogue entry %s aside: %v", seg, err)
	}
	gap := waitAlert(t, s.alerts, "wal_gap", true, 15*time.Second)
	if !strings.Contains(gap.Message, seg) {
		t.Fatalf("wal_gap does not name %s: %+v", seg, gap)
	}
	if m := a.metrics(); m["pgvault_alert/wal_gap"] != 1 || m["pgvault_wal_missing_segments"] != 1 {
		t.Fatalf("during the gap: alert %v, missing %v", m["pgvault_alert/wal_gap"], m["pgvault_wal_missing_segments"])
	}
	if err := os.Rename(aside, segFile); err != nil {
		t.Fatal(err)
	}
	waitAlert(t, s.alerts, "wal_gap", false, 15*time.Second)
	t.Logf("wal_gap started and ended: %s", gap.Message)

	// SIGTERM: the agent stores the WAL its streamer received and exits 0.
	last := mark(3, "last, just before SIGTERM")
	a.waitState("the streamer to receive the last marker", 10*time.Second, func(st agentState) bool {
		ss := st.Sites["main"].Streamer
		return ss != nil && ss.Received != "" && lsn(t, ss.Received) >= lsn(t, last.LSN)
	})
	code, took := a.stop()
	if code != 0 {
		t.Fatalf("agent exited %d after SIGTERM", code)
	}
	confirmed := c.QueryString(t, "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = 'pgvault'")
	if lsn(t, confirmed) < lsn(t, last.LSN) {
		t.Fatalf("after SIGTERM the slot confirms %s, before the last marker at %s: WAL was not stored", confirmed, last.LSN)
	}
	t.Logf("SIGTERM: exit 0 after %.2fs with WAL stored to %s (last marker at %s)", took.Seconds(), confirmed, last.LSN)

	// Status works without the agent: repositories, state file and alerts.
	status = statusDoc{}
	if r := v.run("--output", "json", "status", "--config", s.conf); r.code != 0 || json.Unmarshal([]byte(r.stdout), &status) != nil {
		t.Fatalf("status without the agent: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	checkStatus(t, status, false, newest.ID, oldest.StopTime)
	if r := v.run("wal", "check"); r.code != 0 {
		t.Fatalf("wal check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	v.must("repo", "check")

	// The oldest retained backup replays to the end of the archive, and
	// the latest has every marker too.
	for _, id := range []string{oldest.ID, "latest"} {
		postgresOwns(t, v.base)
		target := v.restore(id)
		postgresOwns(t, v.base)
		r := pgtest.StartOn(t, target, pgtest.Options{})
		r.WaitRecoveryDone(t)
		got := r.MarkerIDs(t)
		for _, m := range want {
			if !slices.Contains(got, m) {
				t.Fatalf("restore of %s: marker %d is missing (have %d of %d)", id, m, len(got), len(want))
			}
		}
		r.Stop(t, "fast")
		t.Logf("restore of %s to the end of the archive has all %d markers", id, len(want))
	}
	t.Logf("whole agent test: %.1fs", time.Since(start).Seconds())
}

// statusDoc is the part of `pgvault status --output json` tests read.
type statusDoc struct {
	Agent struct {
		Running bool `json:"running"`
	} `json:"agent"`
	Sites []struct {
		Site       string `json:"site"`
		Backups    int    `json:"backups"`
		LastBackup *struct {
			ID string `json:"id"`
		} `json:"last_backup"`
		WAL struct {
			LagBytes     *int64     `json:"lag_bytes"`
			LastArchived *time.Time `json:"last_archived"`
		} `json:"wal"`
		PITR *struct {
			Earliest time.Time `json:"earliest"`
			Latest   time.Time `json:"latest"`
			Seconds  float64   `json:"seconds"`
		} `json:"pitr"`
		Alerts []struct {
			Alert   string `json:"alert"`
			Message string `json:"message"`
		} `json:"alerts"`
		Error string `json:"error"`
	} `json:"sites"`
}

func checkStatus(t *testing.T, st statusDoc, running bool, newest string, earliest time.Time) {
	t.Helper()
	if st.Agent.Running != running || len(st.Sites) != 1 {
		t.Fatalf("status: %+v, want running %v", st, running)
	}
	s := st.Sites[0]
	switch {
	case s.Site != "main" || s.Error != "" || s.Backups != 2 || s.LastBackup == nil || s.LastBackup.ID != newest:
		t.Fatalf("status of main: %+v", s)
	case s.PITR == nil || !s.PITR.Earliest.Equal(earliest.UTC()) || s.PITR.Seconds <= 0:
		t.Fatalf("status PITR window %+v, want from %v", s.PITR, earliest)
	case len(s.Alerts) != 0:
		t.Fatalf("status alerts: %+v", s.Alerts)
	case s.WAL.LastArchived == nil:
		t.Fatalf("status WAL: %+v", s.WAL)
	case running && (s.WAL.LagBytes == nil || *s.WAL.LagBytes < 0):
		t.Fatalf("status WAL lag with the agent running: %+v", s.WAL)
	}
}

// TestAgentAuthenticationAlert: a role with a scram password in
// pg_hba.conf and the wrong password in the configuration start the
// authentication_error alert; the right password and SIGHUP end it.
func TestAgentAuthenticationAlert(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.Exec(t, "CREATE ROLE vaultagent LOGIN REPLICATION PASSWORD 'right horse'")
	prependHBA(t, c, "vaultagent", "host replication vaultagent 127.0.0.1/32 scram-sha-256\nhost all vaultagent 127.0.0.1/32 scram-sha-256\n")
	v := newPostgresVault(t)
	s := newAgentSetup(t, c, v)
	s.pgPass = filepath.Join(s.dir, "pg.pass")
	os.WriteFile(s.pgPass, []byte("wrong staple\n"), 0o600)
	s.write(t, fmt.Sprintf("host=127.0.0.1 port=%d user=vaultagent dbname=postgres sslmode=disable", c.Port()),
		"    pg_password_file: "+s.pgPass+"\n    basebackup:\n      interval_hours: 24\n      fast_checkpoint: true")
	a := s.start(t)
	alertFile := filepath.Join(s.alerts, "main", "authentication_error")
	alert := waitAlert(t, s.alerts, "authentication_error", true, 30*time.Second)
	if alert.Site != "main" || alert.Alert != "authentication_error" || alert.Since.IsZero() || !strings.Contains(alert.Message, "password") {
		t.Fatalf("alert file: %+v", alert)
	}
	t.Logf("alert: %s", alert.Message)
	if m := a.metrics(); m["pgvault_alert/authentication_error"] != 1 {
		t.Fatalf("pgvault_alert{alert=authentication_error} = %v", m["pgvault_alert/authentication_error"])
	}
	r := v.run("status", "--config", s.conf)
	if r.code != 3 || !strings.Contains(r.stdout, "ALERT") || !strings.Contains(r.stdout, "authentication_error") {
		t.Fatalf("status with an alert: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// A configuration that does not load is refused on SIGHUP: the agent
	// goes on with the running one and says why in the state document.
	good, _ := os.ReadFile(s.conf)
	os.WriteFile(s.conf, append(good, []byte("bogus_key: 1\n")...), 0o600)
	a.hup()
	st := a.waitState("reload_error in the state file after a bad reload", 10*time.Second, func(st agentState) bool { return st.ReloadError != "" })
	if !strings.Contains(st.ReloadError, "bogus_key") {
		t.Fatalf("reload_error: %q", st.ReloadError)
	}
	os.WriteFile(s.conf, good, 0o600)

	// The right password and SIGHUP: the streamer connects, the alert
	// ends, and the first backup is taken.
	os.WriteFile(s.pgPass, []byte("right horse\n"), 0o600)
	fixed := time.Now()
	a.hup()
	a.waitState("the first backup with the right password", 60*time.Second, func(st agentState) bool {
		return st.Sites["main"].Backup.Count >= 1
	})
	if _, err := os.Stat(alertFile); !os.IsNotExist(err) {
		t.Fatalf("alert file still there after the fix: %v", err)
	}
	t.Logf("alert ended and the first backup was taken %.1fs after SIGHUP", time.Since(fixed).Seconds())
	if m := a.metrics(); m["pgvault_alert/authentication_error"] != 0 {
		t.Fatalf("pgvault_alert{alert=authentication_error} = %v after the fix", m["pgvault_alert/authentication_error"])
	}
	if code, _ := a.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestAgentRefusesBadSetup: a world-readable password file and a
// configuration mistake stop the agent at once with the fix.
func TestAgentRefusesBadSetup(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "main.pass")
	os.WriteFile(pw, []byte("secret\n"), 0o644)
	os.Chmod(pw, 0o644)
	conf := filepath.Join(dir, "pgvault.yaml")
	write := func(extra string) {
		os.WriteFile(conf, []byte(fmt.Sprintf("sites:\n  main:\n    pg: \"host=127.0.0.1 port=1 user=x\"\n    repo: %s/repo\n    password_file: %s\n%sstate_file: %s/state.json\nalert_dir: %s/alerts\nhttp: {listen: \"off\"}\n",
			dir, pw, extra, dir, dir)), 0o600)
	}
	write("")
	run := func() result {
		cmd := exec.Command(pgvaultBin, "agent", "--config", conf)
		cmd.Env = filteredEnv()
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return result{code, out.String(), errb.String()}
	}
	r := run()
	if r.code != 1 || !strings.Contains(r.stderr, "chmod o-rwx "+pw) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("world-readable password file: exit %d\n%s", r.code, r.stderr)
	}
	os.Chmod(pw, 0o600)
	write("    basebackup:\n      interval_hour: 6\n")
	r = run()
	if r.code != 2 || !strings.Contains(r.stderr, "sites.main.basebackup.interval_hour (line 7): unknown field") {
		t.Fatalf("unknown field: exit %d\n%s", r.code, r.stderr)
	}
	t.Logf("%s", strings.TrimSpace(r.stderr))

	// No repository at the URL: the agent runs, and says so with
	// configuration_error until it is fixed.
	write("")
	cmd := exec.Command(pgvaultBin, "agent", "--config", conf)
	cmd.Env = filteredEnv()
	var log lockedBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	al := waitAlert(t, filepath.Join(dir, "alerts"), "configuration_error", true, 15*time.Second)
	if !strings.Contains(al.Message, "pgvault repo init") {
		t.Fatalf("configuration_error: %+v", al)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("agent: %v\n%s", err, log.String())
	}
}

// TestStatusWithoutAgent: status reads the repository and the alert
// files when no agent ever ran.
func TestStatusWithoutAgent(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	v := newPostgresVault(t)
	s := newAgentSetup(t, c, v)
	s.write(t, c.ConnString("postgres"), "")
	// Standalone: restorable without any WAL archive.
	b := v.backup(c, "--standalone")
	var st statusDoc
	if r := v.run("--output", "json", "status", "--config", s.conf); r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
		t.Fatalf("status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if st.Agent.Running || len(st.Sites) != 1 || st.Sites[0].LastBackup == nil || st.Sites[0].LastBackup.ID != b.ID || st.Sites[0].PITR == nil {
		t.Fatalf("status: %+v", st)
	}
	// An alert file left by an agent shows, and makes status exit 3.
	os.MkdirAll(filepath.Join(s.alerts, "main"), 0o755)
	os.WriteFile(filepath.Join(s.alerts, "main", "wal_gap"), []byte(`{"site":"main","alert":"wal_gap","since":"2024-05-01T12:00:00Z","message":"3 segments missing"}`), 0o644)
	r := v.run("status", "--config", s.conf)
	if r.code != 3 || !strings.Contains(r.stdout, "ALERT        wal_gap since 2024-05-01T12:00:00Z: 3 segments missing") || !strings.Contains(r.stdout, "agent: not running") {
		t.Fatalf("status with an alert file: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("status:\n%s", r.stdout)
}

// TestDoctor: a healthy setup passes (exit 0); a missing repository and
// an unreachable server are problems with fixes (exit 3).
func TestDoctor(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	v := newPostgresVault(t)
	s := newAgentSetup(t, c, v)
	s.write(t, c.ConnString("postgres"), "")
	r := v.run("doctor", "--config", s.conf)
	if r.code != 0 {
		t.Fatalf("doctor on a healthy setup: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	okLines := map[string]bool{}
	for _, line := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(line, "ok ") {
			okLines[line] = true
		}
	}
	for _, want := range []string{"main: postgres 127.0.0.1", "wal_level = replica", "replication connection works", "main: repository", "/dev/fuse is usable", "PostgreSQL 15 programs in", "disk state"} {
		if !slices.ContainsFunc(slices.Collect(maps.Keys(okLines)), func(l string) bool { return strings.Contains(l, want) }) {
			t.Errorf("doctor output has no ok line with %q:\n%s", want, r.stdout)
		}
	}
	t.Logf("doctor:\n%s", r.stdout)

	// Broken: no repository there, nothing listening on the port.
	conf, _ := os.ReadFile(s.conf)
	broken := strings.Replace(string(conf), "repo: "+v.repo, "repo: "+filepath.Join(s.dir, "nothing-here"), 1)
	broken = strings.Replace(broken, fmt.Sprintf("port=%d", c.Port()), "port=1", 1)
	os.WriteFile(s.conf, []byte(broken), 0o600)
	r = v.run("doctor", "--config", s.conf)
	if r.code != 3 {
		t.Fatalf("doctor on a broken setup: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"connection refused", "pgvault repo init", "— fix:"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, r.stdout)
		}
	}
	var doc struct {
		OK       bool `json:"ok"`
		Findings []struct {
			Status, Check, Message, Fix string
		} `json:"findings"`
	}
	r = v.run("--output", "json", "doctor", "--config", s.conf)
	if r.code != 3 || json.Unmarshal([]byte(r.stdout), &doc) != nil || doc.OK {
		t.Fatalf("doctor --output json: exit %d\n%s", r.code, r.stdout)
	}
	for _, f := range doc.Findings {
		if f.Status == "error" && f.Fix == "" {
			t.Errorf("error finding without a fix: %+v", f)
		}
	}
}

// waitAlert waits until the alert file exists (present) or is gone, and
// returns its content.
func waitAlert(t *testing.T, dir, name string, present bool, timeout time.Duration) (al struct {
	Site    string    `json:"site"`
	Alert   string    `json:"alert"`
	Since   time.Time `json:"since"`
	Message string    `json:"message"`
}) {
	t.Helper()
	path := filepath.Join(dir, "main", name)
	what := "alert file " + path + " to appear"
	if !present {
		what = "alert file " + path + " to go"
	}
	waitFor(t, timeout, what, func() (bool, error) {
		data, err := os.ReadFile(path)
		if !present {
			return os.IsNotExist(err), err
		}
		if err != nil {
			return false, err
		}
		err = json.Unmarshal(data, &al)
		return err == nil, err
	})
	return al
}

// TestAgentArchiveModeDrill: an archive-mode site (PostgreSQL's
// archive_command pushes WAL as postgres) whose recovery drill first
// fails, because its SQL check fails, then passes once the check is fixed
// and the agent reloaded: drill_failed starts and ends,
// pgvault_drill_success follows. The password file is readable by root
// only throughout: drills get their WAL through the mount, so PostgreSQL's
// user needs no access to the repository.
func TestAgentArchiveModeDrill(t *testing.T) {
	start := time.Now()
	v := newPITRVault(t)
	c := pgtest.Start(t, pgtest.Options{Settings: v.archiveSettings()})
	c.CreateMarkers(t)
	v.backup(c) // as postgres, like the WAL archive: postgres can read all of it
	c.InsertMarker(t, "after the backup")
	pitrSwitchAndWait(t, c)
	if err := os.Chown(v.pw, 0, 0); err != nil { // only root can read it now
		t.Fatal(err)
	}
	s := agentSetupIn(v.base, v.repo, v.pw)
	s.mode = "archive"
	drillConf := func(sql string) string {
		return `    basebackup:
      interval_hours: 24
    retention:
      basebackup_count: 0
      basebackup_count_min: 0
    drill:
      interval: 2s
      timeout: 2m
      sql: "` + sql + `"`
	}
	s.write(t, c.ConnString("postgres"), drillConf("SELECT count(*) FROM no_such_table"))
	a := s.start(t)
	al := waitAlert(t, s.alerts, "drill_failed", true, 2*time.Minute)
	if !strings.Contains(al.Message, "no_such_table") {
		t.Fatalf("drill_failed: %+v", al)
	}
	t.Logf("first drill failed as expected: %s", al.Message)
	if m := a.metrics(); m["pgvault_drill_success"] != 0 || m["pgvault_alert/drill_failed"] != 1 {
		t.Fatalf("after a failed drill: drill_success %v, alert %v", m["pgvault_drill_success"], m["pgvault_alert/drill_failed"])
	}
	s.write(t, c.ConnString("postgres"), drillConf("SELECT count(*) FROM pgvault_markers"))
	a.hup()
	fixed := time.Now()
	waitAlert(t, s.alerts, "drill_failed", false, 2*time.Minute)
	st := a.waitState("the passing drill in the state file", 10*time.Second, func(st agentState) bool {
		d := st.Sites["main"].Drill
		return d.OK != nil && *d.OK
	})
	t.Logf("drill passed %.1fs after the fix: %s", time.Since(fixed).Seconds(), st.Sites["main"].Drill.Message)
	m := a.metrics()
	now := float64(time.Now().UnixNano()) / 1e9
	switch {
	case m["pgvault_drill_success"] != 1:
		t.Fatalf("pgvault_drill_success = %v after a passing drill", m["pgvault_drill_success"])
	case m["pgvault_backups"] != 1 || st.Sites["main"].Backup.Taken != 0:
		t.Fatalf("archive mode: backups %v, taken by the agent %d (the one backup is recent)", m["pgvault_backups"], st.Sites["main"].Backup.Taken)
	case !near(m["pgvault_wal_last_archived_timestamp_seconds"], now, 120):
		t.Fatalf("pgvault_wal_last_archived_timestamp_seconds = %v", m["pgvault_wal_last_archived_timestamp_seconds"])
	case m["pgvault_wal_lag_bytes"] < 0 || m["pgvault_wal_lag_bytes"] > 16<<20:
		t.Fatalf("pgvault_wal_lag_bytes = %v in archive mode", m["pgvault_wal_lag_bytes"])
	}
	if _, ok := m["pgvault_wal_lag_bytes"]; !ok {
		t.Fatal("no pgvault_wal_lag_bytes in archive mode")
	}
	if code, _ := a.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	t.Logf("archive-mode drill test: %.1fs", time.Since(start).Seconds())
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/stream"
)

func TestClassify(t *testing.T) {
	pg := func(code, msg string) error {
		return &authFailure{msg: "explained", err: fmt.Errorf("connect: %w", &pgconn.PgError{Code: code, Message: msg})}
	}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"wrong password", pg("28P01", `password authentication failed for user "x"`), AlertAuthentication},
		{"unknown role", pg("28000", `role "x" does not exist`), AlertAuthentication},
		{"pg_hba", pg("28000", `no pg_hba.conf entry for replication connection from host "10.0.0.1"`), AlertConfiguration},
		{"no REPLICATION", pg("42501", "must be superuser or replication role to start walsender"), AlertConfiguration},
		{"wal_level", pg("55000", "WAL level not sufficient for making an online backup; wal_level must be set to \"replica\""), AlertConfiguration},
		{"no WAL sender", pg("53300", "number of requested standby connections exceeds max_wal_senders (currently 1)"), AlertConfiguration},
		{"too many connections: transient", pg("53300", "sorry, too many clients already"), ""},
		{"starting up: transient", pg("57P03", "the database system is starting up"), ""},
		{"too old", fmt.Errorf("base backup: %w", backup.ErrUnsupportedServer), AlertVersionUnsupported},
		{"slot invalidated", fmt.Errorf("stream: %w", stream.ErrSlotInvalidated), AlertConfiguration},
		{"timeline conflict", stream.ErrTimelineConflict, AlertConfiguration},
		{"refused: transient", errors.New("dial tcp 127.0.0.1:5432: connect: connection refused"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(tc.err); got != tc.want {
				t.Fatalf("Classify = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseDrill(t *testing.T) {
	tests := []struct {
		name           string
		code           int
		stdout, stderr string
		ok             bool
		text           string
	}{
		{"passed", 0, `{"id":"0123456789abcdef","ok":true,"problems":[]}`, "", true, "backup 01234567 booted"},
		{"problems", 3, `{"id":"0123456789abcdef","ok":false,"problems":[{"object":"amcheck","message":"index corrupt"}]}`, "pgvault: verify found 1 problem\n", false, "amcheck: index corrupt"},
		{"no document", 1, "", "pgvault: PostgreSQL 15 programs not found: install postgresql-15\n", false, "PostgreSQL 15 programs not found"},
		{"nothing at all", 2, "", "", false, "verify exited 2"},
		{"exit 0 but not ok", 0, `{"id":"ab","ok":false}`, "", false, "failed on backup ab"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := parseDrill(tc.code, []byte(tc.stdout), []byte(tc.stderr))
			if got.OK != tc.ok || !strings.Contains(got.Message, tc.text) || strings.Contains(got.Message, "\n") {
				t.Fatalf("parseDrill = %+v, want ok %v and %q", got, tc.ok, tc.text)
			}
		})
	}
}

func TestDrillCommandKeepsThePasswordOffTheCommandLine(t *testing.T) {
	s := &Site{Name: "main", Repo: "/r", Drill: Drill{Timeout: Duration{time.Minute}, Owner: "postgres", SQL: "SELECT 1"}}
	s.Secrets = Secrets{RepoPassword: "hunter2", RepoPasswordFrom: "PGVAULT_SITE_MAIN_PASSWORD"}
	cmd := DrillCommand(context.Background(), "/usr/bin/pgvault", s, "/cache")
	line := strings.Join(cmd.Args, " ")
	if strings.Contains(line, "hunter2") || !slices.Contains(cmd.Env, "PGVAULT_PASSWORD=hunter2") {
		t.Fatalf("env password: args %q", line)
	}
	for _, want := range []string{"--repo /r", "verify latest --boot", "--timeout 1m0s", "--owner postgres", "--sql SELECT 1", "--output json"} {
		if !strings.Contains(line, want) {
			t.Fatalf("drill command %q lacks %q", line, want)
		}
	}
	s.Secrets = Secrets{RepoPassword: "hunter2", RepoPasswordFrom: "/etc/pgvault/main.pass"}
	cmd = DrillCommand(context.Background(), "/usr/bin/pgvault", s, "/cache")
	line = strings.Join(cmd.Args, " ")
	if strings.Contains(line, "hunter2") || !strings.Contains(line, "--password-file /etc/pgvault/main.pass") {
		t.Fatalf("file password: %q", line)
	}
	for _, kv := range cmd.Env {
		if strings.HasPrefix(kv, "PGVAULT_PASSWORD=") {
			t.Fatalf("password in env although a file gives it: %q", kv)
		}
	}
}

func TestMetricsAreLabelledBySite(t *testing.T) {
	m := NewMetrics("test")
	m.initSite("main")
	m.lastBackupTime.WithLabelValues("main").Set(1)
	m.lastBackupDuration.WithLabelValues("main").Set(2)
	m.backupBytes.WithLabelValues("main").Set(3)
	m.walLag.WithLabelValues("main").Set(4)
	m.walLastArchived.WithLabelValues("main").Set(5)
	m.repoStored.WithLabelValues("main").Set(6)
	m.pitrWindow.WithLabelValues("main").Set(7)
	m.drillSuccess.WithLabelValues("main").Set(1)
	m.SetAlert("main", AlertWALGap, true)
	srv := httptest.NewServer(NewHandler(m, func() *State { return &State{Version: StateVersion} }))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`pgvault_last_backup_timestamp_seconds{site="main"} 1`,
		`pgvault_last_backup_duration_seconds{site="main"} 2`,
		`pgvault_backup_bytes{site="main"} 3`,
		`pgvault_wal_lag_bytes{site="main"} 4`,
		`pgvault_wal_last_archived_timestamp_seconds{site="main"} 5`,
		`pgvault_upload_errors_total{site="main"} 0`,
		`pgvault_repo_stored_bytes{site="main"} 6`,
		`pgvault_pitr_window_seconds{site="main"} 7`,
		`pgvault_drill_success{site="main"} 1`,
		`pgvault_alert{alert="wal_gap",site="main"} 1`,
		`pgvault_alert{alert="drill_failed",site="main"} 0`,
		`pgvault_agent_info{version="test"} 1`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	m.DeleteSite("main")
	resp, _ = srv.Client().Get(srv.URL + "/metrics")
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), `site="main"`) {
		t.Error("DeleteSite left series")
	}
	resp, _ = srv.Client().Get(srv.URL + "/status")
	body, _ = io.ReadAll(resp.Body)
	if !strings.Contains(string(body), `"version": 1`) {
		t.Errorf("/status: %s", body)
	}
}

func TestStateWriterIsAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "state.json")
	n := 0
	w := newStateWriter(func() string { return path }, time.Hour, func() *State {
		n++
		return &State{Version: StateVersion, PID: n, Sites: map[string]*SiteState{}}
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.run(ctx); close(done) }()
	w.changed()
	// Read the file every 10 ms (any read would show a torn write) until
	// the write the change asked for, the second, is there.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(5 * time.Second)
	for {
		st, err := ReadState(path)
		if err != nil {
			t.Fatal(err) // never a torn file
		}
		if st != nil && st.PID >= 2 {
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("a change did not cause a write within 5 s")
		}
	}
	cancel()
	<-done
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

func TestParseSynthetic(t *testing.T) {
	cases := []struct {
		name           string
		code           int
		stdout, stderr string
		id, skipped    string
		err            string
	}{
		{"taken", 0, `{"id":"abc","parent":"def","consistent_lsn":"0/3000000"}`, "", "abc", "", ""},
		{"nothing to replay", 0, `{"skipped":true,"reason":"no WAL to roll the backup forward with"}`, "", "", "no WAL to roll", ""},
		{"failed", 1, "", "pgvault: synthetic backup from abcd: the replay failed\n", "", "", "the replay failed"},
		{"killed", -1, "", "", "", "", "exited -1"},
	}
	for _, c := range cases {
		out, err := parseSynthetic(c.code, []byte(c.stdout), []byte(c.stderr))
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: err %v, want %q", c.name, err, c.err)
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case out.ID != c.id || !strings.HasPrefix(out.Skipped, c.skipped):
			t.Errorf("%s: %+v", c.name, out)
		}
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// statusSetup writes an agent configuration for a new repository and
// returns the configuration's path and the alert folder.
func statusSetup(t *testing.T) (conf, alerts, state string) {
	t.Helper()
	dir, args := newRepo(t)
	pw := args[3] // --repo DIR --password-file FILE ...
	base := t.TempDir()
	conf = filepath.Join(base, "pgvault.yaml")
	alerts = filepath.Join(base, "alerts")
	state = filepath.Join(base, "state.json")
	os.WriteFile(conf, []byte(fmt.Sprintf(`sites:
  main:
    pg: "host=127.0.0.1 port=1 user=nobody"
    repo: %s
    password_file: %s
state_file: %s
alert_dir: %s
`, dir, pw, state, alerts)), 0o600)
	return conf, alerts, state
}

func TestStatusReadsRepositoryStateAndAlerts(t *testing.T) {
	conf, alerts, state := statusSetup(t)
	var doc statusReport
	code, out, stderr := pgv(t, nil, "--output", "json", "--cache-dir", t.TempDir(), "status", "--config", conf)
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil {
		t.Fatalf("status: exit %d\n%s%s", code, out, stderr)
	}
	if doc.Agent.Running || len(doc.Sites) != 1 || doc.Sites[0].Site != "main" || doc.Sites[0].Error != "" || doc.Sites[0].Backups != 0 || doc.Sites[0].PITR != nil {
		t.Fatalf("status of an empty repository without an agent: %s", out)
	}

	// A live agent's state (this process stands in for it) adds the lag.
	now := time.Now().UTC().Format(time.RFC3339Nano)
	os.WriteFile(state, []byte(fmt.Sprintf(`{"version":1,"pid":%d,"updated":%q,"sites":{"main":{"wal":{"lag_bytes":4096},"streamer":{"connected":true,"node":"db1"}}}}`, os.Getpid(), now)), 0o644)
	code, out, _ = pgv(t, nil, "--cache-dir", t.TempDir(), "status", "--config", conf)
	if code != 0 || !strings.Contains(out, "agent: running (pid") || !strings.Contains(out, "lag 4.0 KiB") || !strings.Contains(out, "streaming from db1") {
		t.Fatalf("status with a running agent: exit %d\n%s", code, out)
	}

	// An alert file: shown, and exit 3.
	os.MkdirAll(filepath.Join(alerts, "main"), 0o755)
	os.WriteFile(filepath.Join(alerts, "main", "upload_retries_warning"),
		[]byte(`{"site":"main","alert":"upload_retries_warning","since":"2024-05-01T12:00:00Z","message":"upload failed"}`), 0o644)
	code, out, stderr = pgv(t, nil, "--output", "json", "--cache-dir", t.TempDir(), "status", "--config", conf)
	doc = statusReport{}
	if code != 3 || json.Unmarshal([]byte(out), &doc) != nil || len(doc.Sites[0].Alerts) != 1 || doc.Sites[0].Alerts[0].Name != "upload_retries_warning" {
		t.Fatalf("status with an alert: exit %d\n%s%s", code, out, stderr)
	}
	if !strings.Contains(stderr, "1 of 1 sites have alerts") {
		t.Fatalf("stderr: %s", stderr)
	}
}

func TestStatusAndAgentUsage(t *testing.T) {
	for _, args := range [][]string{{"status"}, {"agent"}, {"status", "--config", "/nonexistent/pgvault.yaml"}} {
		code, _, stderr := pgv(t, map[string]string{"PGVAULT_CONFIG": ""}, args...)
		if code == 0 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Fatalf("%v: exit %d, %q", args, code, stderr)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("sites:\n  main:\n    pg: \"host=db\"\n    repo: /r\n    mode: push\n"), 0o600)
	code, _, stderr := pgv(t, nil, "agent", "--config", bad)
	if code != exitUsage || !strings.Contains(stderr, "sites.main.mode (line 5)") {
		t.Fatalf("agent with a bad configuration: exit %d, %q", code, stderr)
	}
}

func TestChooseConfig(t *testing.T) {
	dir := t.TempDir()
	present := filepath.Join(dir, "pgvault.yaml")
	os.WriteFile(present, []byte("sites: {}\n"), 0o600)
	missing := filepath.Join(dir, "none.yaml")
	for _, tt := range []struct {
		given, def, needed string
		want               string
		usage              bool
	}{
		{"/given.yaml", present, "x", "/given.yaml", false},
		{"", present, "x", present, false},
		{"", missing, "its configuration", "", true},
		{"", missing, "", "", false}, // doctor runs without one
	} {
		got, err := chooseConfig(tt.given, tt.def, "status", tt.needed)
		if got != tt.want || (err != nil) != tt.usage {
			t.Errorf("chooseConfig(%q, %q, %q) = %q, %v", tt.given, tt.def, tt.needed, got, err)
		}
		if err != nil && !strings.Contains(err.Error(), tt.def) {
			t.Errorf("the usage error does not name the default %s: %v", tt.def, err)
		}
	}
}

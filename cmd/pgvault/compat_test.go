package main

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/internal/service"
	"github.com/pgvault/pgvault/stream"
)

func TestMulticall(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want []string
	}{
		{[]string{"/usr/bin/pgvault", "list"}, []string{"/usr/bin/pgvault", "list"}},
		{[]string{"/usr/local/bin/pgbackrest", "--stanza=main", "info"}, []string{"/usr/local/bin/pgbackrest", "compat", "pgbackrest", "--stanza=main", "info"}},
		{[]string{"pghoard_postgres_command", "--mode", "archive"}, []string{"pghoard_postgres_command", "compat", "pghoard", "--mode", "archive"}},
		{[]string{"/opt/pgvault-wal-g", "wal-push", "p"}, []string{"/opt/pgvault-wal-g", "compat", "wal-g", "wal-push", "p"}},
		{[]string{"barman-wal-restore", "h", "s", "f", "p"}, []string{"barman-wal-restore", "compat", "barman-wal-restore", "h", "s", "f", "p"}},
		{[]string{"barman"}, []string{"barman"}},
	} {
		if got := multicall(tc.argv); !slices.Equal(got, tc.want) {
			t.Errorf("multicall(%q) = %q, want %q", tc.argv, got, tc.want)
		}
	}
}

func TestParseForeign(t *testing.T) {
	known := []foreignOption{{names: []string{"stanza"}, value: true}, {names: []string{"user", "U"}, value: true}, {names: []string{"delta"}}}
	for _, tc := range []struct {
		name    string
		args    []string
		lenient bool
		opts    map[string]string
		pos     []string
		ignored []string
		err     string
	}{
		{name: "equals and space", args: []string{"--stanza=main", "archive-get", "-U", "barman", "%f"},
			opts: map[string]string{"stanza": "main", "user": "barman"}, pos: []string{"archive-get", "%f"}},
		{name: "switch after positional", args: []string{"restore", "--delta"}, opts: map[string]string{"delta": "true"}, pos: []string{"restore"}},
		{name: "double dash ends options", args: []string{"--", "--stanza"}, opts: map[string]string{}, pos: []string{"--stanza"}},
		{name: "unknown strict", args: []string{"--repo1-path=/x"}, err: "unknown option --repo1-path=/x"},
		{name: "unknown lenient", args: []string{"--repo1-path=/x", "--archive-async", "info"}, lenient: true,
			opts: map[string]string{}, pos: []string{"info"}, ignored: []string{"repo1-path", "archive-async"}},
		{name: "missing value", args: []string{"info", "--stanza"}, err: "option --stanza needs a value"},
		{name: "value to a switch", args: []string{"--delta=y"}, err: "option --delta takes no value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := parseForeign("tool", tc.args, known, tc.lenient)
			if tc.err != "" {
				var ue usageError
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.As(err, &ue) {
					t.Fatalf("err %v, want a usage error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(a.opts) != len(tc.opts) || !slices.Equal(a.pos, tc.pos) || !slices.Equal(a.ignored, tc.ignored) {
				t.Fatalf("got opts %v pos %q ignored %q", a.opts, a.pos, a.ignored)
			}
			for k, v := range tc.opts {
				if a.opts[k] != v {
					t.Fatalf("option %s = %q, want %q", k, a.opts[k], v)
				}
			}
		})
	}
}

func TestPgbackrestRestoreOptions(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want restoreOptions
		ref  string
		err  string
	}{
		{args: []string{"--pg1-path=/d", "restore"}, want: restoreOptions{target: "/d"}, ref: "latest"},
		{args: []string{"--pg1-path=/d", "--type=time", "--target=2026-12-01 10:00:00+00", "--target-action=promote", "--set=abc", "--delta", "restore"},
			want: restoreOptions{target: "/d", toTime: "2026-12-01 10:00:00+00", targetAction: "promote", delta: true}, ref: "abc"},
		{args: []string{"--pg1-path=/d", "--type=immediate", "restore"}, want: restoreOptions{target: "/d", toImmediate: true}, ref: "latest"},
		{args: []string{"--pg1-path=/d", "--type=lsn", "--target=0/3000000", "--target-exclusive", "restore"}, want: restoreOptions{target: "/d", toLSN: "0/3000000", exclusive: true}, ref: "latest"},
		{args: []string{"--pg1-path=/d", "--type=standby", "restore"}, err: "--type=standby"},
		{args: []string{"--pg1-path=/d", "--target=x", "restore"}, err: "--target needs --type"},
	} {
		a, err := parseForeign("pgbackrest", tc.args, pgbackrestOptions, true)
		if err != nil {
			t.Fatal(err)
		}
		o, ref, err := pgbackrestRestoreOptions(a)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || ref != tc.ref || o.target != tc.want.target || o.toTime != tc.want.toTime || o.toLSN != tc.want.toLSN ||
			o.toImmediate != tc.want.toImmediate || o.targetAction != tc.want.targetAction || o.delta != tc.want.delta || o.exclusive != tc.want.exclusive {
			t.Errorf("%q: %+v ref %q err %v; want %+v ref %q", tc.args, o, ref, err, tc.want, tc.ref)
		}
	}
}

// TestPgbackrestInfoShape checks the fields monitoring scripts read from
// `pgbackrest info --output=json`, by their pgBackRest names.
func TestPgbackrestInfoShape(t *testing.T) {
	start := time.Date(2026, 12, 1, 1, 0, 0, 0, time.UTC)
	entries := []service.ListEntry{{ID: "abc", StartTime: start, StopTime: start.Add(time.Minute), StartLSN: "0/2000028", StopLSN: "0/2000100",
		StartWAL: "000000010000000000000002", StopWAL: "000000010000000000000002", Bytes: 100, StoredBytes: 10, SystemID: "7312345678901234567", ServerVersion: "15.18"}}
	check := &service.WALCheckReport{GapReport: &stream.GapReport{OK: true, From: "000000010000000000000002", To: "000000010000000000000009"}}
	data, err := json.Marshal([]pbrStanza{pgbackrestStanzaInfo("main", "aes-256-gcm", entries, check)})
	if err != nil {
		t.Fatal(err)
	}
	var doc []map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	s := doc[0]
	backup := s["backup"].([]any)[0].(map[string]any)
	archive := s["archive"].([]any)[0].(map[string]any)
	db := s["db"].([]any)[0].(map[string]any)
	for what, ok := range map[string]bool{
		"status.code 0":         s["status"].(map[string]any)["code"].(float64) == 0,
		"backup label":          backup["label"] == "abc",
		"backup type":           backup["type"] == "full",
		"timestamp.stop":        backup["timestamp"].(map[string]any)["stop"].(float64) == float64(start.Add(time.Minute).Unix()),
		"archive.start":         backup["archive"].(map[string]any)["start"] == "000000010000000000000002",
		"archive max":           archive["max"] == "000000010000000000000009",
		"archive id":            archive["id"] == "15-1",
		"db system-id a number": strings.Contains(string(data), `"system-id":7312345678901234567`),
		"db version":            db["version"] == "15",
	} {
		if !ok {
			t.Errorf("%s: wrong in %s", what, data)
		}
	}
	empty := pgbackrestStanzaInfo("main", "none", nil, nil)
	if empty.Status.Code != 2 || empty.Status.Message != "no valid backups" {
		t.Errorf("no backups: status %+v", empty.Status)
	}
}

func TestServerVersionNum(t *testing.T) {
	for v, want := range map[string]int{"15.18": 150018, "18.4": 180004, "16beta1": 160000, "": 0} {
		if got := serverVersionNum(v); got != want {
			t.Errorf("serverVersionNum(%q) = %d, want %d", v, got, want)
		}
	}
}

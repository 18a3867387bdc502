package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fileAlert reads an alert file; nil when there is none.
func fileAlert(t *testing.T, dir, site, name string) *Alert {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, site, name))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var a Alert
	if err := json.Unmarshal(data, &a); err != nil {
		t.Fatalf("alert file: %v\n%s", err, data)
	}
	return &a
}

func TestAlertStartAndEnd(t *testing.T) {
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	type step struct {
		at     time.Duration // after t0
		op     string        // raise, clear, clearall
		source string
		msg    string
		// Expected afterwards:
		active bool
		since  time.Duration
		text   string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"starts and ends", []step{
			{0, "raise", "postgres a", "password rejected", true, 0, "password rejected"},
			{time.Minute, "clear", "postgres a", "", false, 0, ""},
		}},
		{"raised again keeps its start, takes the new message", []step{
			{0, "raise", "postgres a", "first", true, 0, "first"},
			{time.Minute, "raise", "postgres a", "second", true, 0, "second"},
		}},
		{"ends only when every source clears", []step{
			{0, "raise", "postgres a", "a fails", true, 0, "a fails"},
			{time.Second, "raise", "postgres b", "b fails", true, 0, "b fails"},
			{2 * time.Second, "clear", "postgres a", "", true, 0, "b fails"},
			{3 * time.Second, "clear", "postgres b", "", false, 0, ""},
		}},
		{"clearing another source changes nothing", []step{
			{0, "raise", "drill", "drill failed", true, 0, "drill failed"},
			{time.Second, "clear", "streamer", "", true, 0, "drill failed"},
		}},
		{"a new condition after the end starts anew", []step{
			{0, "raise", "wal check", "gap", true, 0, "gap"},
			{time.Minute, "clear", "wal check", "", false, 0, ""},
			{time.Hour, "raise", "wal check", "gap again", true, time.Hour, "gap again"},
		}},
		{"clear all", []step{
			{0, "raise", "x", "m", true, 0, "m"},
			{0, "raise", "y", "n", true, 0, "n"},
			{time.Second, "clearall", "", "", false, 0, ""},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			clock := &fakeClock{t: t0}
			a, err := NewAlerts(dir, clock, nil)
			if err != nil {
				t.Fatal(err)
			}
			var changes []bool
			a.OnChange(func(_ Alert, active bool) { changes = append(changes, active) })
			for i, s := range tc.steps {
				clock.t = t0.Add(s.at)
				switch s.op {
				case "raise":
					a.Raise("main", AlertAuthentication, s.source, s.msg)
				case "clear":
					a.Clear("main", AlertAuthentication, s.source)
				case "clearall":
					a.ClearAll("main", AlertAuthentication)
				}
				got := fileAlert(t, dir, "main", AlertAuthentication)
				if (got != nil) != s.active || a.IsActive("main", AlertAuthentication) != s.active {
					t.Fatalf("step %d: file %v, want active %v", i, got, s.active)
				}
				if got == nil {
					continue
				}
				if got.Site != "main" || got.Name != AlertAuthentication || !got.Since.Equal(t0.Add(s.since)) || got.Message != s.text {
					t.Fatalf("step %d: alert %+v, want since %v message %q", i, got, t0.Add(s.since), s.text)
				}
			}
			// OnChange fires once per start and once per end.
			for i := 1; i < len(changes); i++ {
				if changes[i] == changes[i-1] {
					t.Fatalf("OnChange sequence %v repeats a state", changes)
				}
			}
		})
	}
}

func TestAlertsAdoptPreviousRun(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{t: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}
	a, _ := NewAlerts(dir, clock, nil)
	a.Raise("main", AlertDrillFailed, "drill", "drill failed")
	a.Raise("other", AlertWALGap, "wal check", "gap")

	clock.advance(time.Hour) // the agent restarts an hour later
	b, err := NewAlerts(dir, clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	act := b.Active("")
	if len(act) != 2 || act[0].Site != "main" || !act[0].Since.Equal(clock.t.Add(-time.Hour)) || act[0].Sources[0] != "drill" {
		t.Fatalf("adopted %+v", act)
	}
	b.Clear("main", AlertDrillFailed, "drill") // the next drill passed
	if fileAlert(t, dir, "main", AlertDrillFailed) != nil || !b.IsActive("other", AlertWALGap) {
		t.Fatal("adopted alert not ended by its source")
	}
	b.ClearSources("other", func(_, src string) bool { return src == "wal check" })
	if fileAlert(t, dir, "other", AlertWALGap) != nil {
		t.Fatal("ClearSources left the alert")
	}
	// Foreign and temporary files in the folder are not alerts.
	os.WriteFile(filepath.Join(dir, "main", ".drill_failed.tmp-1"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "main", "README"), []byte("x"), 0o644)
	if got, _ := ReadAlerts(dir); len(got) != 0 {
		t.Fatalf("ReadAlerts: %+v", got)
	}
}

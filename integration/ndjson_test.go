package integration

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// TestNDJSONOutput: --output ndjson gives one JSON event per line while
// a backup, a verify and a restore of a real cluster run (progress with
// the task, bytes done and total), and ends with the result event.
func TestNDJSONOutput(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 1)
	v := newVault(t, "")
	target := filepath.Join(t.TempDir(), "data")
	for _, tc := range []struct {
		task string
		args []string
	}{
		{"backup", []string{"--pg", c.ReplicationConnString(), "backup", "--standalone", "--fast-checkpoint"}},
		{"verify", []string{"verify", "latest"}},
		{"restore", []string{"restore", "latest", "--target", target}},
	} {
		out := v.must(append([]string{"--output", "ndjson"}, tc.args...)...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		var progress int
		for i, line := range lines {
			var ev struct {
				Event  string          `json:"event"`
				Time   string          `json:"time"`
				Task   string          `json:"task"`
				Done   int64           `json:"done"`
				Total  int64           `json:"total"`
				Unit   string          `json:"unit"`
				Result json.RawMessage `json:"result"`
			}
			if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Time == "" {
				t.Fatalf("%s: line %d is not an event (%v): %s", tc.task, i+1, err, line)
			}
			last := i == len(lines)-1
			switch {
			case last && ev.Event == "result":
				var r struct {
					ID string `json:"id"`
				}
				if err := json.Unmarshal(ev.Result, &r); err != nil || r.ID == "" {
					t.Fatalf("%s: the result event has no backup id: %s", tc.task, line)
				}
			case !last && ev.Event == "progress":
				if ev.Task != tc.task || ev.Unit != "bytes" || ev.Done <= 0 || (ev.Total > 0 && ev.Done > ev.Total) {
					t.Fatalf("%s: progress event %s", tc.task, line)
				}
				progress++
			default:
				t.Fatalf("%s: line %d of %d is a %q event: %s", tc.task, i+1, len(lines), ev.Event, out)
			}
		}
		if progress == 0 {
			t.Fatalf("%s: no progress event before the result:\n%s", tc.task, out)
		}
	}
}

package integration

import (
	"encoding/json"
	"os/exec"
	"testing"
)

// TestDemo runs `pgvault demo`, the README's main command, for real.
func TestDemo(t *testing.T) {
	out, err := exec.Command(pgvaultBin, "--output", "json", "demo", "--scale", "2").CombinedOutput()
	if err != nil {
		t.Fatalf("pgvault demo: %v\n%s", err, out)
	}
	var rep struct {
		Steps []struct {
			Step   string  `json:"step"`
			Detail string  `json:"detail"`
			Secs   float64 `json:"seconds"`
		} `json:"steps"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("demo JSON: %v\n%s", err, out)
	}
	want := []string{"postgres", "repo", "stream", "load", "backup", "markers", "instant", "dump", "restore", "browse", "verify", "check"}
	if len(rep.Steps) != len(want) {
		t.Fatalf("demo steps: %+v", rep.Steps)
	}
	for i, s := range rep.Steps {
		if s.Step != want[i] {
			t.Fatalf("step %d is %q, want %q", i, s.Step, want[i])
		}
		t.Logf("%-8s %5.2fs %s", s.Step, s.Secs, s.Detail)
	}
}

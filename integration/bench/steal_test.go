package bench

import (
	"math"
	"testing"
)

func TestStealPct(t *testing.T) {
	before, err := ParseCPUTimes("cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 1 2 3\n")
	if err != nil {
		t.Fatal(err)
	}
	after, err := ParseCPUTimes("cpu  200 0 100 1000 10 0 0 140 7 0\n")
	if err != nil {
		t.Fatal(err)
	}
	// 100 user + 50 system + 200 idle + 100 steal = 450 jiffies, 100 of them stolen.
	if got := StealPct(before, after); math.Abs(got-100.0*100/450) > 1e-9 {
		t.Errorf("StealPct = %v", got)
	}
	if got := StealPct(nil, after); !math.IsNaN(got) {
		t.Errorf("without a first reading: %v, want NaN", got)
	}
	if got := StealPct(after, after); !math.IsNaN(got) {
		t.Errorf("no time passed: %v, want NaN", got)
	}
	for _, bad := range []string{"", "intr 1 2 3", "cpu 1 2 3", "cpu 1 2 3 4 5 6 7 x"} {
		if _, err := ParseCPUTimes(bad); err == nil {
			t.Errorf("ParseCPUTimes(%q) accepted", bad)
		}
	}
	if stealNote(math.NaN()) != "" || stealNote(12.34) == "" {
		t.Error("stealNote")
	}
}

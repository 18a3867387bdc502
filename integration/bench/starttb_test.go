package bench

import (
	"os"
	"strings"
	"testing"
)

func TestTryStart(t *testing.T) {
	t.Run("started", func(t *testing.T) {
		cleaned := false
		dir, err := tryStart(t, func(tb testing.TB) string {
			tb.Cleanup(func() { cleaned = true })
			return tb.TempDir()
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("the start's TempDir is gone before the test's end: %v", err)
		}
		if cleaned {
			t.Error("the start's cleanup ran before the test's end")
		}
	})
	after := false
	for _, c := range []struct {
		name  string
		start func(testing.TB) int
		want  string
	}{
		{"Fatalf", func(tb testing.TB) int { tb.Fatalf("minio: %s", "exited"); after = true; return 1 }, "minio: exited"},
		{"FailNow", func(tb testing.TB) int { tb.FailNow(); after = true; return 1 }, "failed"},
		{"Skip", func(tb testing.TB) int { tb.Skip("no swift"); after = true; return 1 }, "skipped: no swift"},
		{"Errorf", func(tb testing.TB) int { tb.Errorf("one"); tb.Error("two"); return 1 }, "one; two"},
	} {
		// The failure is the start's, not the subtest's: it passes.
		t.Run(c.name, func(t *testing.T) {
			got, err := tryStart(t, c.start)
			if err == nil || !strings.Contains(err.Error(), c.want) || got != 0 {
				t.Errorf("got %d, %v; want 0 and an error with %q", got, err, c.want)
			}
			if after {
				t.Error("the start went on after it ended the goroutine")
			}
		})
	}
}

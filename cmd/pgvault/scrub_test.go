package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/internal/redact"
)

func TestScrubSpans(t *testing.T) {
	for in, want := range map[string]string{
		"host=h password=hunter2 user=u":                "host=h password=xxxxxxx user=u",
		"host=h PASSWORD='a b\\'c' user=u":              "host=h PASSWORD=xxxxxxxx user=u",
		"postgres://alice:hunter2@db:5432/x":            "postgres://alice:xxxxxxx@db:5432/x",
		"postgres://db/x?user=a&password=hunter2&ssl=1": "postgres://db/x?user=a&password=xxxxxxx&ssl=1",
		"mypassword=keep":                               "mypassword=keep",
		"--repo=/srv/repo":                              "--repo=/srv/repo",
		"password=":                                     "password=",
		"host=h password = hunter2 user=u":              "host=h password = xxxxxxx user=u",
		"host=h password ='two words' user=u":           "host=h password =xxxxxxxxxxx user=u",
	} {
		b := []byte(in)
		for _, s := range redact.Spans(in) {
			for k := s[0]; k < s[1]; k++ {
				b[k] = 'x'
			}
		}
		if string(b) != want {
			t.Errorf("%q: got %q, want %q", in, b, want)
		}
	}
}

// TestScrubArgsHidesPasswordsFromPs runs the test binary as a child that
// scrubs its own arguments and reads its /proc/self/cmdline.
func TestScrubArgsHidesPasswordsFromPs(t *testing.T) {
	if os.Getenv("PGVAULT_TEST_SCRUB_CHILD") == "1" {
		args := scrubArgs(os.Args)
		cmdline, _ := os.ReadFile("/proc/self/cmdline")
		if !strings.Contains(strings.Join(args, " "), "password=hunter2hunter2") {
			os.Stdout.WriteString("COPY LOST THE PASSWORD")
		}
		os.Stdout.Write(cmdline)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestScrubArgsHidesPasswordsFromPs$", "--", "--pg", "host=h password=hunter2hunter2 user=u")
	cmd.Env = append(os.Environ(), "PGVAULT_TEST_SCRUB_CHILD=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "hunter2") || strings.Contains(string(out), "COPY LOST") || !strings.Contains(string(out), "password=xxxxxxxxxxxxxx") {
		t.Fatalf("child's cmdline after scrubbing: %q", out)
	}
}

package promtool

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Version is the github.com/prometheus/prometheus module version `make
// deps` builds promtool from (.ci/install-deps names the same).
const Version = "v0.316.0"

// Binary returns the path of promtool: $PGVAULT_PROMTOOL, else
// $HOME/.cache/pgvault/bin/promtool, waiting while .ci/install-deps
// builds it in the background.
func Binary() (string, error) {
	p := os.Getenv("PGVAULT_PROMTOOL")
	if p == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find promtool: %w", err)
		}
		p = filepath.Join(home, ".cache", "pgvault", "bin", "promtool")
	}
	fi, err := os.Stat(p)
	if err != nil && waitForBuild(filepath.Dir(p)) {
		fi, err = os.Stat(p)
	}
	if err != nil {
		return "", fmt.Errorf("promtool %s missing: run `make deps` (it builds it with `go install github.com/prometheus/prometheus/cmd/promtool@%s`; log in %s) or set PGVAULT_PROMTOOL: %w",
			p, Version, filepath.Join(filepath.Dir(p), "promtool-build.log"), err)
	}
	if fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("promtool %s is not executable: run `make deps` again", p)
	}
	return p, nil
}

// waitForBuild waits while .ci/install-deps builds promtool in the
// background (its marker file names the build's pid) and reports whether
// it waited.
func waitForBuild(dir string) bool {
	marker := filepath.Join(dir, "promtool.building")
	waited := false
	for deadline := time.Now().Add(15 * time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
		data, err := os.ReadFile(marker)
		if err != nil {
			return waited
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || syscall.Kill(pid, 0) != nil {
			return waited // the builder died without removing its marker
		}
		waited = true
	}
	return waited
}

// Run runs promtool with args and returns its combined output; a non-zero
// exit is an error that carries the output.
func Run(args ...string) (string, error) {
	bin, err := Binary()
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("promtool %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

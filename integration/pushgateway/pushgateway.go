package pushgateway

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Version is the Pushgateway module version `make deps` builds.
const Version = "v1.11.5"

// Server is a running Pushgateway.
type Server struct {
	URL string // http://127.0.0.1:PORT

	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// Binary returns the path of the Pushgateway binary: $PGVAULT_PUSHGATEWAY,
// else $HOME/.cache/pgvault/bin/pushgateway.
func Binary() (string, error) {
	p := os.Getenv("PGVAULT_PUSHGATEWAY")
	if p == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the Pushgateway binary: %w", err)
		}
		p = filepath.Join(home, ".cache", "pgvault", "bin", "pushgateway")
	}
	fi, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("Pushgateway binary %s missing: run `make deps` (it builds it with `go install github.com/prometheus/pushgateway@%s`) or set PGVAULT_PUSHGATEWAY: %w", p, Version, err)
	}
	if fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("Pushgateway binary %s is not executable: run `make deps` again", p)
	}
	return p, nil
}

// Start starts a Pushgateway and stops it at the end of the test.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{logPath: filepath.Join(t.TempDir(), "pushgateway.log")}
	t.Cleanup(s.Stop)
	// A free port can be taken between picking and binding it: try again.
	for try := 1; ; try++ {
		err := s.start(bin, freeAddr(t))
		if err == nil {
			return s
		}
		if try == 3 {
			t.Fatal(err)
		}
	}
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (s *Server) start(bin, addr string) error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("pushgateway: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pushgateway: start %s: %w", bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done, s.URL = cmd, done, "http://"+addr

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(s.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			s.cmd, s.done = nil, nil
			return fmt.Errorf("pushgateway exited during startup on %s: %s", addr, s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("pushgateway not ready on %s after 30s: %s", addr, s.logTail())
		}
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	b = bytes.TrimSpace(b)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	if len(b) == 0 {
		return "(no output)"
	}
	return string(b)
}

// Stop stops the server (SIGTERM, then SIGKILL after 10 s). Stopping a
// stopped server does nothing.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	s.cmd, s.done = nil, nil
}

// Metrics scrapes the Pushgateway's /metrics: every series pushed to it
// (with the job, instance and grouping labels it adds), by family name.
func (s *Server) Metrics() (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape the Pushgateway: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("scrape the Pushgateway: %s: %s", resp.Status, b)
	}
	out := map[string]*dto.MetricFamily{}
	dec := expfmt.NewDecoder(resp.Body, expfmt.ResponseFormat(resp.Header))
	for {
		mf := &dto.MetricFamily{}
		if err := dec.Decode(mf); err == io.EOF {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("decode the Pushgateway's metrics: %w", err)
		}
		out[mf.GetName()] = mf
	}
}

// Value returns the value of the series of family name whose labels
// include every one of labels, and whether there is one.
func Value(fams map[string]*dto.MetricFamily, name string, labels model.LabelSet) (float64, bool) {
	mf := fams[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		have := model.LabelSet{}
		for _, lp := range m.GetLabel() {
			have[model.LabelName(lp.GetName())] = model.LabelValue(lp.GetValue())
		}
		match := true
		for k, v := range labels {
			if have[k] != v {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		switch {
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetUntyped() != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

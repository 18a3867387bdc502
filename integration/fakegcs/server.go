package fakegcs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgvault/pgvault/repo/backend/gcs"
)

// Version is the fake-gcs-server module version `make deps` builds.
const Version = "v1.56.1"

// Project is the project the test bucket is created in.
const Project = "pgvault-test"

// Server is a running fake-gcs-server.
type Server struct {
	Endpoint string // http://127.0.0.1:PORT
	Bucket   string

	t       testing.TB
	bin     string
	root    string // the filesystem backend's folder
	logPath string
	addr    string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Binary returns the path of the fake-gcs-server binary: $PGVAULT_FAKE_GCS,
// else $HOME/.cache/pgvault/bin/fake-gcs-server, waiting while
// .ci/install-fake-gcs builds it in the background.
func Binary() (string, error) {
	p := os.Getenv("PGVAULT_FAKE_GCS")
	if p == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the fake-gcs-server binary: %w", err)
		}
		p = filepath.Join(home, ".cache", "pgvault", "bin", "fake-gcs-server")
	}
	fi, err := os.Stat(p)
	if err != nil && waitForBuild(filepath.Join(filepath.Dir(p), "fake-gcs-server.building")) {
		fi, err = os.Stat(p)
	}
	if err != nil {
		return "", fmt.Errorf("fake-gcs-server binary %s missing: run `make deps` (.ci/install-fake-gcs builds it with `go install github.com/fsouza/fake-gcs-server@%s`; log in %s) or set PGVAULT_FAKE_GCS: %w",
			p, Version, filepath.Join(filepath.Dir(p), "fake-gcs-server-build.log"), err)
	}
	if fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("fake-gcs-server binary %s is not executable: run `make deps` again", p)
	}
	return p, nil
}

// waitForBuild waits while the marker names a live build process and
// reports whether it waited.
func waitForBuild(marker string) bool {
	waited := false
	for deadline := time.Now().Add(10 * time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
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

// Start starts a server with an empty bucket and stops it at the end of
// the test.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &Server{
		Bucket:  "pgvault-test",
		t:       t,
		bin:     bin,
		root:    filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "fake-gcs-server.log"),
	}
	t.Cleanup(s.Stop)
	// A free port can be taken between picking and binding it: try again.
	for try := 1; ; try++ {
		s.addr = freeAddr(t)
		s.Endpoint = "http://" + s.addr
		err := s.start()
		if err == nil {
			break
		}
		if try == 3 {
			t.Fatal(err)
		}
	}
	if err := s.ensureBucket(); err != nil {
		t.Fatal(err)
	}
	return s
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// ensureBucket creates the bucket, or checks that it exists.
func (s *Server) ensureBucket() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := s.Options("")
	o.Project = Project
	b, err := gcs.New(ctx, o)
	if err != nil {
		return err
	}
	defer b.Close()
	if err := b.EnsureBucket(ctx); err != nil {
		return fmt.Errorf("fake-gcs-server: create bucket %q: %w (%s)", s.Bucket, err, s.logTail())
	}
	return nil
}

// start runs the binary and waits until the server answers.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("fake-gcs-server: already running")
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("fake-gcs-server: %w", err)
	}
	defer logf.Close()
	host, port, _ := net.SplitHostPort(s.addr)
	cmd := exec.Command(s.bin, "-scheme", "http", "-host", host, "-port", port,
		"-backend", "filesystem", "-filesystem-root", s.root,
		// The library reads objects through the XML API at
		// endpoint/bucket/object, which the server serves on its public
		// host only.
		"-external-url", s.Endpoint, "-public-host", s.addr, "-log-level", "warn")
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("fake-gcs-server: start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(s.Endpoint + "/storage/v1/b")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			s.cmd, s.done = nil, nil
			return fmt.Errorf("fake-gcs-server exited during startup on %s: %s", s.addr, s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stopLocked(syscall.SIGKILL)
			return fmt.Errorf("fake-gcs-server not ready on %s after 30s: %s", s.addr, s.logTail())
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
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked(syscall.SIGTERM)
}

// Kill stops the server with SIGKILL, as a crash would.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked(syscall.SIGKILL)
}

func (s *Server) stopLocked(sig syscall.Signal) {
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, sig)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	s.cmd, s.done = nil, nil
}

// Restart stops the server if it runs and starts it again on the same
// address with the same objects (they live in a folder, not in memory).
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	var err error
	// The old process's socket may linger for a moment.
	for try := 0; try < 50; try++ {
		if err = s.start(); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err == nil {
		err = s.ensureBucket()
	}
	if err != nil {
		s.t.Fatalf("restart fake-gcs-server: %v", err)
	}
}

// Options are gcs.Options for a repository under prefix.
func (s *Server) Options(prefix string) gcs.Options {
	return gcs.Options{Bucket: s.Bucket, Prefix: prefix, Endpoint: s.Endpoint}
}

// URL is a repository URL for a repository under prefix, naming the
// server as its endpoint.
func (s *Server) URL(prefix string) string {
	q := url.Values{}
	q.Set("endpoint", s.Endpoint)
	return "gs://" + s.Bucket + "/" + strings.Trim(prefix, "/") + "?" + q.Encode()
}

// Env returns the environment a child process needs besides the URL:
// STORAGE_EMULATOR_HOST, which the library honours even for a URL without
// an endpoint.
func (s *Server) Env() []string {
	return []string{"STORAGE_EMULATOR_HOST=" + s.addr}
}

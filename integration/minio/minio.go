package minio

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
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

	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/s3"
)

// Version is the MinIO module version `make deps` builds.
const Version = "v0.0.0-20260212201848-7aac2a2c5b7c"

// Region is the region the server and URL use.
const Region = "us-east-1"

// Server is a running MinIO.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Bucket    string

	t       testing.TB
	bin     string
	dir     string // data
	certs   string
	logPath string
	addr    string
	console string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Binary returns the path of the MinIO binary: $PGVAULT_MINIO, else
// $HOME/.cache/pgvault/bin/minio.
func Binary() (string, error) {
	p := os.Getenv("PGVAULT_MINIO")
	if p == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the MinIO binary: %w", err)
		}
		p = filepath.Join(home, ".cache", "pgvault", "bin", "minio")
	}
	fi, err := os.Stat(p)
	if err != nil && waitForBuild(filepath.Dir(p)) {
		fi, err = os.Stat(p)
	}
	if err != nil {
		return "", fmt.Errorf("MinIO binary %s missing: run `make deps` (it builds MinIO with `go install github.com/minio/minio@%s`; log in %s) or set PGVAULT_MINIO: %w",
			p, Version, filepath.Join(filepath.Dir(p), "minio-build.log"), err)
	}
	if fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("MinIO binary %s is not executable: run `make deps` again", p)
	}
	return p, nil
}

// waitForBuild waits while .ci/install-deps builds MinIO in the background
// (its marker file names the build's pid) and reports whether it waited.
func waitForBuild(dir string) bool {
	marker := filepath.Join(dir, "minio.building")
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
		AccessKey: "pgv" + randomHex(8),
		SecretKey: randomHex(20),
		Bucket:    "pgvault-test",
		t:         t,
		bin:       bin,
		dir:       filepath.Join(dir, "data"),
		certs:     filepath.Join(dir, "certs"),
		logPath:   filepath.Join(dir, "minio.log"),
	}
	t.Cleanup(s.Stop)
	// A free port can be taken between picking and binding it: try again.
	for try := 1; ; try++ {
		s.addr, s.console = freeAddr(t), freeAddr(t)
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

// ensureBucket creates the bucket, or checks that it exists. MinIO's
// readiness probe answers 200 a moment before its S3 API stops answering
// 503, so transient errors are retried for a while.
func (s *Server) ensureBucket() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := s3.New(ctx, s.Options(""))
	if err != nil {
		return err
	}
	defer b.Close()
	for {
		err := b.EnsureBucket(ctx)
		if err == nil {
			return nil
		}
		if backend.IsPermanent(err) {
			return fmt.Errorf("MinIO: create bucket %q: %w", s.Bucket, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("MinIO: create bucket %q: not ready after 30s: %w (%s)", s.Bucket, err, s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start runs the binary and waits until the server answers.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("minio: already running")
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("minio: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(s.bin, "server", "--quiet", "--address", s.addr,
		"--console-address", s.console, "--certs-dir", s.certs, s.dir)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+s.AccessKey,
		"MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_REGION="+Region,
	)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("minio: start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(s.Endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			s.cmd, s.done = nil, nil
			return fmt.Errorf("minio exited during startup on %s: %s", s.addr, s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stopLocked(syscall.SIGKILL)
			return fmt.Errorf("minio not ready on %s after 30s: %s", s.addr, s.logTail())
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
// address, with the same data and credentials.
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
		s.t.Fatalf("restart MinIO: %v", err)
	}
}

// Options are s3.Options for a repository under prefix.
func (s *Server) Options(prefix string) s3.Options {
	return s3.Options{
		Bucket:    s.Bucket,
		Prefix:    prefix,
		Endpoint:  s.Endpoint,
		Region:    Region,
		PathStyle: true,
		AccessKey: s.AccessKey,
		SecretKey: s.SecretKey,
	}
}

// URL is a repository URL for a repository under prefix. It carries no
// credentials: set them with SetEnv.
func (s *Server) URL(prefix string) string {
	q := url.Values{}
	q.Set("endpoint", s.Endpoint)
	q.Set("region", Region)
	q.Set("path_style", "true")
	return "s3://" + s.Bucket + "/" + strings.Trim(prefix, "/") + "?" + q.Encode()
}

// SetEnv sets AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the test
// (t.Setenv: not for parallel tests).
func (s *Server) SetEnv(t testing.TB) {
	t.Setenv("AWS_ACCESS_KEY_ID", s.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s.SecretKey)
	t.Setenv("AWS_REGION", Region)
}

// Env returns the same variables for a child process.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + Region,
	}
}

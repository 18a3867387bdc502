package azurite

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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/azure"
)

// Version is the Azurite npm version .ci/install-azurite installs.
const Version = "3.37.0"

// The emulator's well-known development account, published in Azurite's
// and Azure's documentation: not a secret.
const (
	Account = "devstoreaccount1"
	Key     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Server is a running Azurite blob service.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT/devstoreaccount1
	Container string

	t       testing.TB
	bin     string
	dir     string // data (--location)
	logPath string
	addr    string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Binary returns the path of azurite-blob: $PGVAULT_AZURITE, else
// $PGVAULT_AZURITE_DIR or $HOME/.cache/pgvault/azurite, then
// node_modules/.bin/azurite-blob.
func Binary() (string, error) {
	p := os.Getenv("PGVAULT_AZURITE")
	if p == "" {
		dir := os.Getenv("PGVAULT_AZURITE_DIR")
		if dir == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("find azurite-blob: %w", err)
			}
			dir = filepath.Join(home, ".cache", "pgvault", "azurite")
		}
		p = filepath.Join(dir, "node_modules", ".bin", "azurite-blob")
	}
	fi, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("azurite-blob %s missing: run `make deps` (.ci/install-azurite installs npm azurite@%s) or set PGVAULT_AZURITE: %w", p, Version, err)
	}
	if fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("azurite-blob %s is not executable: run `make deps` again", p)
	}
	return p, nil
}

// Start starts Azurite with an empty container and stops it at the end of
// the test.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &Server{
		Container: "pgvault-test",
		t:         t,
		bin:       bin,
		dir:       filepath.Join(dir, "data"),
		logPath:   filepath.Join(dir, "azurite.log"),
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	// A free port can be taken between picking and binding it: try again.
	for try := 1; ; try++ {
		s.addr = freeAddr(t)
		s.Endpoint = "http://" + s.addr + "/" + Account
		err := s.start()
		if err == nil {
			break
		}
		if try == 3 {
			t.Fatal(err)
		}
	}
	if err := s.ensureContainer(); err != nil {
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

// ensureContainer creates the container, or checks that it exists.
func (s *Server) ensureContainer() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := azure.New(ctx, s.Options(""))
	if err != nil {
		return err
	}
	defer b.Close()
	for {
		err := b.EnsureContainer(ctx)
		if err == nil {
			return nil
		}
		if backend.IsPermanent(err) {
			return fmt.Errorf("azurite: create container %q: %w", s.Container, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("azurite: create container %q: not ready after 30s: %w (%s)", s.Container, err, s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// start runs azurite-blob and waits until it answers HTTP.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("azurite: already running")
	}
	host, port, _ := net.SplitHostPort(s.addr)
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("azurite: %w", err)
	}
	defer logf.Close()
	// --loose ignores headers Azurite does not implement (the SDK sends
	// some), --skipApiVersionCheck accepts an SDK newer than the
	// emulator, and --disableTelemetry keeps it from calling home.
	cmd := exec.Command(s.bin, "--blobHost", host, "--blobPort", port, "--location", s.dir,
		"--silent", "--loose", "--skipApiVersionCheck", "--disableTelemetry")
	cmd.Dir = s.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("azurite: start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done

	// Any HTTP answer (403 to an unsigned request) means it listens.
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(s.Endpoint + "?comp=list")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-done:
			s.cmd, s.done = nil, nil
			return fmt.Errorf("azurite exited during startup on %s: %s", s.addr, s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stopLocked(syscall.SIGKILL)
			return fmt.Errorf("azurite not ready on %s after 30s: %s", s.addr, s.logTail())
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

// Stop stops the server (SIGTERM, which makes Azurite write its metadata
// out, then SIGKILL after 10 s). Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked(syscall.SIGTERM)
}

// Kill stops the server with SIGKILL, as a crash would (see the package
// doc for what Azurite then forgets).
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
// address, with the same data.
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
		err = s.ensureContainer()
	}
	if err != nil {
		s.t.Fatalf("restart Azurite: %v", err)
	}
}

// Options are azure.Options for a repository under prefix, with the
// account key.
func (s *Server) Options(prefix string) azure.Options {
	return azure.Options{
		Container: s.Container,
		Prefix:    prefix,
		Account:   Account,
		Endpoint:  s.Endpoint,
		Key:       Key,
	}
}

// URL is a repository URL for a repository under prefix. It carries no
// key: set it with SetEnv, or give Env to a child process.
func (s *Server) URL(prefix string) string {
	q := url.Values{}
	q.Set("account", Account)
	q.Set("endpoint", s.Endpoint)
	return "azure://" + s.Container + "/" + strings.Trim(prefix, "/") + "?" + q.Encode()
}

// ConnectionString is the account's connection string, for tests of that
// way of giving credentials.
func (s *Server) ConnectionString() string {
	return "DefaultEndpointsProtocol=http;AccountName=" + Account + ";AccountKey=" + Key + ";BlobEndpoint=" + s.Endpoint + ";"
}

// SetEnv sets AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY for the test
// (t.Setenv: not for parallel tests).
func (s *Server) SetEnv(t testing.TB) {
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// Env returns the same variables for a child process.
func (s *Server) Env() []string {
	return []string{
		azure.EnvAccount + "=" + Account,
		azure.EnvKey + "=" + Key,
	}
}

package swiftaio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
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
	"github.com/pgvault/pgvault/repo/backend/swift"
)

// Credentials of the tempauth users every server has.
const (
	User       = "test:tester" // admin of account AUTH_test
	Key        = "testing"
	ReaderUser = "test:reader" // no admin: refused the account's containers
	ReaderKey  = "reading"
	// Container is the container Start creates.
	Container = "pgvault-test"
)

// python is the interpreter Debian's Swift is installed for (a python3
// earlier in PATH, e.g. pyenv's, may not have the swift module).
const python = "/usr/bin/python3"

// programs run by every server, in start order.
var programs = []string{"account", "container", "object", "proxy"}

// Server is a running Swift all-in-one.
type Server struct {
	AuthURL   string // http://127.0.0.1:PORT/auth/v1.0
	Container string

	t     testing.TB
	dir   string
	ports map[string]int // memcached and every program

	mu    sync.Mutex
	procs []*proc
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Check reports what is missing to run a server, with the fix.
func Check() error {
	var missing []string
	for _, p := range []string{"/usr/bin/swift-proxy-server", "/usr/bin/swift-account-server",
		"/usr/bin/swift-container-server", "/usr/bin/swift-object-server", "/usr/bin/memcached", python} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("OpenStack Swift is not installed (%s missing): run `make deps` (it runs .ci/install-swift)", strings.Join(missing, ", "))
	}
	return nil
}

// Start starts a server with an empty container and stops it at the end
// of the test.
func Start(t testing.TB) *Server {
	t.Helper()
	if err := Check(); err != nil {
		t.Fatal(err)
	}
	s := &Server{Container: Container, t: t, dir: t.TempDir()}
	t.Cleanup(s.Stop)
	began := time.Now()
	// A free port can be taken between picking and binding it: try again
	// with new ports (the rings name them, so they are built anew).
	for try := 1; ; try++ {
		err := s.setUp()
		if err == nil {
			err = s.start()
		}
		if err == nil {
			break
		}
		s.Kill()
		if try == 3 {
			t.Fatal(err)
		}
		t.Logf("swiftaio: try %d: %v", try, err)
	}
	if err := s.ensureContainer(); err != nil {
		t.Fatal(err)
	}
	t.Logf("swiftaio: Swift ready at %s in %v", s.AuthURL, time.Since(began).Round(time.Millisecond))
	return s
}

// setUp picks ports and writes the rings and configuration files.
func (s *Server) setUp() error {
	s.ports = map[string]int{}
	for _, name := range append([]string{"memcached"}, programs...) {
		p, err := freePort()
		if err != nil {
			return err
		}
		s.ports[name] = p
	}
	s.AuthURL = fmt.Sprintf("http://127.0.0.1:%d/auth/v1.0", s.ports["proxy"])
	dev := filepath.Join(s.dir, "srv", "d1")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		return fmt.Errorf("swiftaio: %w", err)
	}
	if err := checkXattr(dev); err != nil {
		return err
	}
	files := map[string]string{"swift.conf": swiftConf}
	for _, name := range programs {
		files[name+"-server.conf"] = s.config(name)
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(s.dir, name), []byte(text), 0o644); err != nil {
			return fmt.Errorf("swiftaio: %w", err)
		}
	}
	// One interpreter builds the three rings: swift-ring-builder would
	// take nine (create, add, rebalance for each), a second apiece.
	cmd := exec.Command(python, "-c", ringScript, s.dir,
		strconv.Itoa(s.ports["account"]), strconv.Itoa(s.ports["container"]), strconv.Itoa(s.ports["object"]))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("swiftaio: build rings: %v\n%s", err, out)
	}
	return nil
}

// checkXattr tells early, and with the reason, what the object server
// would otherwise report as a 507 on every PUT.
func checkXattr(dir string) error {
	f := filepath.Join(dir, ".xattr-probe")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		return fmt.Errorf("swiftaio: %w", err)
	}
	defer os.Remove(f)
	if err := syscall.Setxattr(f, "user.swift.probe", []byte("x"), 0); err != nil {
		return fmt.Errorf("swiftaio: the object server needs user extended attributes, which %s's file system refuses (%v): set TMPDIR to a folder on ext4, xfs or tmpfs (kernel 6.6 or later)", dir, err)
	}
	return nil
}

const swiftConf = `[swift-hash]
swift_hash_path_suffix = pgvault-test
swift_hash_path_prefix = pgvault-test

[storage-policy:0]
name = Policy-0
default = yes
`

// ringScript builds account, container and object rings of one device
// and one replica in argv[1], for servers on the ports argv[2:5].
const ringScript = `
import os, sys
from swift.common.ring import RingBuilder
d = sys.argv[1]
for name, port in zip(("account", "container", "object"), sys.argv[2:5]):
    b = RingBuilder(6, 1, 1)
    b.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port),
               "device": "d1", "weight": 1.0})
    b.rebalance()
    b.get_ring().save(os.path.join(d, name + ".ring.gz"))
`

// config is the configuration of one program. workers = 0 serves in the
// process itself (no forked workers to find and stop).
func (s *Server) config(name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `[DEFAULT]
bind_ip = 127.0.0.1
bind_port = %d
workers = 0
user = %s
swift_dir = %s
devices = %s
mount_check = false
disable_fallocate = true
log_level = INFO
`, s.ports[name], currentUser(), s.dir, filepath.Join(s.dir, "srv"))
	switch name {
	case "account", "container", "object":
		fmt.Fprintf(&b, `
[pipeline:main]
pipeline = %[1]s-server

[app:%[1]s-server]
use = egg:swift#%[1]s
`, name)
	case "proxy":
		fmt.Fprintf(&b, `
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats tempauth copy dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = %[2]s .admin
user_test_reader = %[3]s

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:%[1]d

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:dlo]
use = egg:swift#dlo
`, s.ports["memcached"], Key, ReaderKey)
	}
	return b.String()
}

func currentUser() string {
	if u := os.Getenv("USER"); u != "" && os.Geteuid() != 0 {
		return u
	}
	if os.Geteuid() == 0 {
		return "root"
	}
	return strconv.Itoa(os.Geteuid())
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("swiftaio: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) logPath(name string) string { return filepath.Join(s.dir, name+".log") }

// start runs memcached and the four servers and waits until the proxy
// answers /info and every server accepts connections.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.procs) > 0 {
		return errors.New("swiftaio: already running")
	}
	run := func(name string, args ...string) error {
		logf, err := os.OpenFile(s.logPath(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("swiftaio: %w", err)
		}
		defer logf.Close()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("swiftaio: start %s: %w", args[0], err)
		}
		p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
		go func() { _ = cmd.Wait(); close(p.done) }()
		s.procs = append(s.procs, p)
		return nil
	}
	memArgs := []string{"/usr/bin/memcached", "-l", "127.0.0.1", "-p", strconv.Itoa(s.ports["memcached"]), "-U", "0", "-m", "16"}
	if os.Geteuid() == 0 {
		memArgs = append(memArgs, "-u", "root")
	}
	if err := run("memcached", memArgs...); err != nil {
		return err
	}
	// The servers start side by side: each spends about a second importing
	// Python modules.
	for _, name := range programs {
		if err := run(name, "/usr/bin/swift-"+name+"-server", filepath.Join(s.dir, name+"-server.conf"), "-v"); err != nil {
			s.stopLocked(syscall.SIGKILL)
			return err
		}
	}
	client := &http.Client{Timeout: time.Second}
	// Four Python servers starting on a loaded two-core machine have
	// taken 17 s.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err := s.ready(client)
		if err == nil {
			return nil
		}
		for _, p := range s.procs {
			select {
			case <-p.done:
				s.stopLocked(syscall.SIGKILL)
				return fmt.Errorf("swiftaio: %s exited during startup: %s", p.name, s.logTail(p.name))
			default:
			}
		}
		if time.Now().After(deadline) {
			s.stopLocked(syscall.SIGKILL)
			return fmt.Errorf("swiftaio: not ready after 2 minutes: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ready checks that every server accepts connections and the proxy
// answers /info.
func (s *Server) ready(client *http.Client) error {
	for _, name := range append([]string{"memcached"}, programs...) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.ports[name]), time.Second)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		c.Close()
	}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/info", s.ports["proxy"]))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("proxy /info: %s", resp.Status)
	}
	return nil
}

// ensureContainer creates the container (or checks that it exists). A
// first request may still meet a server finishing its start: transient
// errors are retried for a while.
func (s *Server) ensureContainer() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := swift.New(s.Options(""))
	if err != nil {
		return err
	}
	defer b.Close()
	for {
		err := b.EnsureContainer(ctx)
		if err == nil {
			return nil
		}
		if backend.IsPermanent(err) && ctx.Err() == nil {
			return fmt.Errorf("swiftaio: create container %q: %w (%s)", s.Container, err, s.logTail("proxy"))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("swiftaio: create container %q: not ready after 60s: %w (%s)", s.Container, err, s.logTail("proxy"))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Server) logTail(name string) string {
	b, _ := os.ReadFile(s.logPath(name))
	b = bytes.TrimSpace(b)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	if len(b) == 0 {
		return name + ": (no output)"
	}
	return name + ": " + string(b)
}

// Stop stops every process (SIGTERM, then SIGKILL after 10 s). Stopping a
// stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked(syscall.SIGTERM)
}

// Kill stops every process with SIGKILL, as a crash would.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked(syscall.SIGKILL)
}

func (s *Server) stopLocked(sig syscall.Signal) {
	for _, p := range s.procs {
		_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	}
	for _, p := range s.procs {
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	s.procs = nil
}

// Restart stops the server if it runs and starts it again on the same
// ports, with the same data and credentials.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	var err error
	// The old processes' sockets may linger for a moment.
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
		s.t.Fatalf("restart Swift: %v", err)
	}
}

// Options are backend options for a repository under prefix, with the
// admin user's credentials.
func (s *Server) Options(prefix string) swift.Options {
	return swift.Options{
		Container:   s.Container,
		Prefix:      prefix,
		AuthURL:     s.AuthURL,
		User:        User,
		Key:         Key,
		AuthVersion: 1,
	}
}

// URL is a repository URL for a repository under prefix. It carries no
// credentials: set them with SetEnv or Env.
func (s *Server) URL(prefix string) string {
	return "swift://" + s.Container + "/" + strings.Trim(prefix, "/")
}

// Env returns the v1-auth variables for a child process.
func (s *Server) Env() []string {
	return []string{"ST_AUTH=" + s.AuthURL, "ST_USER=" + User, "ST_KEY=" + Key}
}

// SetEnv sets the same variables for the test (t.Setenv: not for parallel
// tests).
func (s *Server) SetEnv(t testing.TB) {
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

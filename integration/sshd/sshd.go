package sshd

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pgvault/pgvault/repo/backend/sftp"
)

// Binary is the OpenSSH server.
const Binary = "/usr/sbin/sshd"

// Server is a running sshd.
type Server struct {
	Host           string // 127.0.0.1
	Port           int
	User           string // the user tests log in as (the current user)
	IdentityFile   string // client private key
	KnownHostsFile string // trusts HostKey for Host:Port
	HostKey        ssh.PublicKey

	t       testing.TB
	dir     string
	config  string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts a server and stops it at the end of the test.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Fatalf("OpenSSH server %s missing: run `make deps` (apt-get install openssh-server): %v", Binary, err)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("the sshd test server needs root (it is configured for root logins); running as uid %d", os.Geteuid())
	}
	// sshd refuses to start without its privilege separation folder.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("create /run/sshd: %v", err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &Server{
		Host:           "127.0.0.1",
		User:           u.Username,
		IdentityFile:   filepath.Join(dir, "id_ed25519"),
		KnownHostsFile: filepath.Join(dir, "known_hosts"),
		t:              t,
		dir:            dir,
		config:         filepath.Join(dir, "sshd_config"),
		logPath:        filepath.Join(dir, "sshd.log"),
	}
	hostKeyFile := filepath.Join(dir, "ssh_host_ed25519_key")
	hostPub, err := writeKey(hostKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	clientPub, err := writeKey(s.IdentityFile)
	if err != nil {
		t.Fatal(err)
	}
	s.HostKey = hostPub
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, ssh.MarshalAuthorizedKey(clientPub), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	for try := 1; ; try++ {
		s.Port = freePort(t)
		cfg := fmt.Sprintf(`ListenAddress 127.0.0.1
Port %d
HostKey %s
AuthorizedKeysFile %s
PidFile %s
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
UseDNS no
Subsystem sftp internal-sftp
LogLevel ERROR
`, s.Port, hostKeyFile, authorized, filepath.Join(dir, "sshd.pid"))
		if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		err := s.start()
		if err == nil {
			break
		}
		if try == 3 {
			t.Fatal(err)
		}
	}
	addr := net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, hostPub) + "\n"
	if err := os.WriteFile(s.KnownHostsFile, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// writeKey writes a new ed25519 private key in OpenSSH format (mode 0600,
// as sshd and ssh demand) and returns its public key.
func writeKey(file string) (ssh.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "pgvault test key")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(file+".pub", nil, 0o644); err != nil {
		return nil, err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return sshPub, os.WriteFile(file+".pub", ssh.MarshalAuthorizedKey(sshPub), 0o644)
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs sshd and waits until it greets connections.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("sshd: already running")
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(Binary, "-D", "-e", "-f", s.config)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("sshd: start: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done

	addr := net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
	deadline := time.Now().Add(15 * time.Second)
	for {
		if greets(addr) {
			return nil
		}
		select {
		case <-done:
			s.cmd, s.done = nil, nil
			return fmt.Errorf("sshd exited during startup on %s: %s", addr, s.logTail())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stopLocked()
			return fmt.Errorf("sshd not accepting connections on %s after 15s: %s", addr, s.logTail())
		}
	}
}

// greets reports whether an SSH server answers on addr with its banner.
func greets(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4)
	n, _ := c.Read(buf)
	return string(buf[:n]) == "SSH-"
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

// Stop stops the server and ends every open session, as a server crash or
// reboot would (sshd's per-connection processes start their own sessions,
// so they are found through /proc and killed too). Stopping a stopped
// server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	pid := s.cmd.Process.Pid
	// Freeze the listener so no new session forks, find its sessions
	// while they are still its descendants, then kill them all (SIGKILL
	// works on stopped processes too).
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	children := descendants(pid)
	for _, child := range children {
		_ = syscall.Kill(child, syscall.SIGKILL)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-s.done
	s.cmd, s.done = nil, nil
}

// descendants returns the processes whose parent chain leads to root.
func descendants(root int) []int {
	parents := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at ')'.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		parents[pid] = ppid
	}
	var out []int
	for pid := range parents {
		for p := parents[pid]; p > 1; p = parents[p] {
			if p == root {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// Freeze stops (SIGSTOP) the server and its sessions without closing
// anything: connections stay open but nothing answers, as with a hung
// server or a dead network path. Thaw undoes it.
func (s *Server) Freeze() { s.signalAll(syscall.SIGSTOP) }

// Thaw resumes a frozen server.
func (s *Server) Thaw() { s.signalAll(syscall.SIGCONT) }

func (s *Server) signalAll(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	pid := s.cmd.Process.Pid
	_ = syscall.Kill(pid, sig)
	for _, child := range descendants(pid) {
		_ = syscall.Kill(child, sig)
	}
}

// Restart stops the server (ending its sessions) and starts it again on
// the same port with the same keys.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	var err error
	for try := 0; try < 50; try++ {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("restart sshd: %v", err)
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Options are sftp.Options for a repository in dir on the server.
func (s *Server) Options(dir string) sftp.Options {
	return sftp.Options{
		User:           s.User,
		Host:           s.Host,
		Port:           s.Port,
		Path:           dir,
		IdentityFile:   s.IdentityFile,
		KnownHostsFile: s.KnownHostsFile,
	}
}

// URL is a repository URL for dir (an absolute path) on the server.
func (s *Server) URL(dir string) string {
	q := url.Values{}
	q.Set("identity", s.IdentityFile)
	q.Set("known_hosts", s.KnownHostsFile)
	u := url.URL{
		Scheme:   "sftp",
		User:     url.User(s.User),
		Host:     s.Addr(),
		Path:     "/" + strings.TrimPrefix(dir, "/"),
		RawQuery: q.Encode(),
	}
	return u.String()
}

// URLForUser is URL with owner's own copies (mode 0600, in keysDir) of
// the client key and known_hosts: a repository URL for commands that run
// as another user than the test (PostgreSQL's restore_command as
// postgres), who cannot read the test's copies.
func (s *Server) URLForUser(dir, keysDir, owner string) (string, error) {
	identity, known := filepath.Join(keysDir, "id_ed25519"), filepath.Join(keysDir, "known_hosts")
	for src, dst := range map[string]string{s.IdentityFile: identity, s.KnownHostsFile: known} {
		data, err := os.ReadFile(src)
		if err == nil {
			err = os.WriteFile(dst, data, 0o600)
		}
		if err == nil {
			err = exec.Command("chown", owner+":"+owner, dst).Run()
		}
		if err != nil {
			return "", fmt.Errorf("copy %s for %s: %w", src, owner, err)
		}
	}
	u, err := url.Parse(s.URL(dir))
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set("identity", identity)
	q.Set("known_hosts", known)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

package sftp

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pgvault/pgvault/repo/backend"
)

// tmpPrefix marks files of interrupted saves; List skips them.
const tmpPrefix = ".tmp-"

// Options configure the backend.
type Options struct {
	// User to log in as; default: the current user.
	User string
	Host string
	// Port defaults to 22.
	Port int
	// Path is the repository folder on the server. A path starting with
	// "/~/" (or "~/") is relative to the login folder.
	Path string
	// IdentityFile is the private key to log in with. When empty,
	// ~/.ssh/id_ed25519, ~/.ssh/id_ecdsa and ~/.ssh/id_rsa are tried, in
	// that order; keys held by ssh-agent (SSH_AUTH_SOCK) are always offered.
	IdentityFile string
	// KnownHostsFile holds the server's host key; default ~/.ssh/known_hosts.
	KnownHostsFile string
	// Connections is the number of SSH connections to spread calls over
	// (each carries many concurrent requests); default 2.
	Connections int
	// Timeout bounds connecting and logging in; default 15 s.
	Timeout time.Duration
	// KeepAlive is the interval of keepalive probes; a connection whose
	// probe goes unanswered for as long is closed. Default 15 s.
	KeepAlive time.Duration
}

// Backend is a repository in a folder on an SFTP server.
type Backend struct {
	user, addr, root string
	timeout          time.Duration
	keepAlive        time.Duration
	signers          []ssh.Signer // from identity files
	identities       []string     // their paths, for messages
	knownHosts       string
	hostKeyCallback  ssh.HostKeyCallback

	slots  []*slot
	next   atomic.Uint64
	closed atomic.Bool
	dirs   sync.Map // folders known to exist
}

var _ backend.Backend = (*Backend)(nil)

type slot struct {
	mu   sync.Mutex
	conn *conn
}

// conn is one SSH connection with its SFTP session.
type conn struct {
	ssh         *ssh.Client
	sftp        *sftp.Client
	dead        chan struct{} // closed when the connection is gone
	posixRename bool
	fsync       bool
}

func (c *conn) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

// close tears the connection down at once. Closing the SSH transport (not
// the SFTP session, which waits for a reply a hung server never sends)
// fails every call in flight; the watcher started by dial then closes the
// SFTP client.
func (c *conn) close() { _ = c.ssh.Close() }

// New checks the options and loads keys and known hosts; it does not
// connect (the first call does).
func New(opts Options) (*Backend, error) {
	if opts.Host == "" {
		return nil, backend.Permanent(errors.New("sftp: no host given"))
	}
	if opts.Path == "" {
		return nil, backend.Permanent(errors.New("sftp: no repository path given"))
	}
	if opts.Port == 0 {
		opts.Port = 22
	}
	if opts.Port < 0 || opts.Port > 65535 {
		return nil, backend.Permanent(fmt.Errorf("sftp: bad port %d", opts.Port))
	}
	if opts.User == "" {
		u, err := user.Current()
		if err != nil {
			return nil, backend.Permanent(fmt.Errorf("sftp: no user given and the current user is unknown: %w", err))
		}
		opts.User = u.Username
	}
	if opts.Connections <= 0 {
		opts.Connections = 2
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 15 * time.Second
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 15 * time.Second
	}
	b := &Backend{
		user:      opts.User,
		addr:      net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port)),
		root:      repoRoot(opts.Path),
		timeout:   opts.Timeout,
		keepAlive: opts.KeepAlive,
	}
	home, _ := os.UserHomeDir()
	b.knownHosts = opts.KnownHostsFile
	if b.knownHosts == "" {
		b.knownHosts = filepath.Join(home, ".ssh", "known_hosts")
	}
	cb, err := knownhosts.New(b.knownHosts)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, backend.Permanent(fmt.Errorf("sftp: known_hosts file %s does not exist: add the server's host key with `%s >> %s` (after checking its fingerprint)",
				b.knownHosts, b.keyscan(), b.knownHosts))
		}
		return nil, backend.Permanent(fmt.Errorf("sftp: read known_hosts file %s: %w", b.knownHosts, err))
	}
	b.hostKeyCallback = cb

	if opts.IdentityFile != "" {
		s, err := loadKey(opts.IdentityFile)
		if err != nil {
			var pm *ssh.PassphraseMissingError
			if !errors.As(err, &pm) || os.Getenv("SSH_AUTH_SOCK") == "" {
				return nil, backend.Permanent(fmt.Errorf("sftp: identity file: %w", err))
			}
			// Passphrase-protected: rely on the agent holding it.
		} else {
			b.signers, b.identities = []ssh.Signer{s}, []string{opts.IdentityFile}
		}
	} else if home != "" {
		for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			p := filepath.Join(home, ".ssh", name)
			if s, err := loadKey(p); err == nil {
				b.signers = append(b.signers, s)
				b.identities = append(b.identities, p)
			}
		}
	}
	if len(b.signers) == 0 && os.Getenv("SSH_AUTH_SOCK") == "" {
		return nil, backend.Permanent(fmt.Errorf("sftp: no SSH key to log in to %s with: give one with identity=/path/to/key, create ~/.ssh/id_ed25519, or start ssh-agent", b.addr))
	}
	b.slots = make([]*slot, opts.Connections)
	for i := range b.slots {
		b.slots[i] = &slot{}
	}
	return b, nil
}

func repoRoot(p string) string {
	switch {
	case p == "~" || p == "/~":
		return "."
	case strings.HasPrefix(p, "/~/"):
		return path.Clean(p[3:])
	case strings.HasPrefix(p, "~/"):
		return path.Clean(p[2:])
	}
	return path.Clean(p)
}

func loadKey(p string) (ssh.Signer, error) {
	pem, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	s, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		var pm *ssh.PassphraseMissingError
		if errors.As(err, &pm) {
			return nil, fmt.Errorf("%s is protected by a passphrase: load it into ssh-agent (ssh-add %s): %w", p, p, err)
		}
		return nil, fmt.Errorf("parse %s: %w", p, err)
	}
	return s, nil
}

func (b *Backend) keyscan() string {
	host, port, _ := net.SplitHostPort(b.addr)
	if port == "22" {
		return "ssh-keyscan " + host
	}
	return "ssh-keyscan -p " + port + " " + host
}

// Location is sftp://user@host:port/path.
func (b *Backend) Location() string {
	p := b.root
	if !strings.HasPrefix(p, "/") {
		p = "/~/" + p
	}
	return "sftp://" + b.user + "@" + b.addr + p
}

// hostKeyAlgorithms lists the key types known_hosts holds for the server,
// so the handshake asks for a key that can be checked (otherwise a server
// offering an RSA key first would look like a changed key to a
// known_hosts that has only its ed25519 key).
func (b *Backend) hostKeyAlgorithms() []string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil
	}
	probe, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil
	}
	err = b.hostKeyCallback(b.addr, &net.TCPAddr{IP: net.IPv4zero}, probe)
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	add := func(a ...string) {
		for _, x := range a {
			if !seen[x] {
				seen[x] = true
				algos = append(algos, x)
			}
		}
	}
	for _, k := range ke.Want {
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			add(t)
		}
	}
	return algos
}

// dial connects and logs in. Failures are transient unless retrying cannot
// help (host key, login refused); a timeout of the dial itself is reported
// without context.DeadlineExceeded in the chain, which would read as the
// caller giving up.
func (b *Backend) dial(parent context.Context) (*conn, error) {
	ctx, cancel := context.WithTimeout(parent, b.timeout)
	defer cancel()
	// failed reports err, as the caller's own context error if that ended.
	failed := func(what string, err error) error {
		if perr := parent.Err(); perr != nil {
			return fmt.Errorf("sftp: %s %s: %w", what, b.addr, perr)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("sftp: %s %s: no answer within %v", what, b.addr, b.timeout)
		}
		return fmt.Errorf("sftp: %s %s: %v", what, b.addr, err)
	}
	d := net.Dialer{}
	nc, err := d.DialContext(ctx, "tcp", b.addr)
	if err != nil {
		if parent.Err() != nil || ctx.Err() != nil {
			return nil, failed("connect to", err)
		}
		return nil, fmt.Errorf("SFTP server %s unreachable: %w", b.addr, err)
	}
	// Make the handshake and SFTP start honour ctx.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	signers := b.signers
	usedAgent := false
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		if ac, err := (&net.Dialer{}).DialContext(ctx, "unix", sock); err == nil {
			defer ac.Close()
			if as, err := agent.NewClient(ac).Signers(); err == nil && len(as) > 0 {
				signers = append(append([]ssh.Signer(nil), signers...), as...)
				usedAgent = true
			}
		}
	}
	var hostKeyErr error
	cfg := &ssh.ClientConfig{
		User: b.user,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signers...)},
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			err := b.hostKeyCallback(hostname, remote, key)
			if err != nil {
				hostKeyErr = b.hostKeyError(key, err)
			}
			return err
		},
		HostKeyAlgorithms: b.hostKeyAlgorithms(),
		Timeout:           b.timeout,
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, b.addr, cfg)
	if err != nil {
		nc.Close()
		switch {
		case hostKeyErr != nil:
			return nil, backend.Permanent(hostKeyErr)
		case parent.Err() != nil || ctx.Err() != nil:
			return nil, failed("log in to", err)
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, backend.Permanent(fmt.Errorf("SFTP login as %s@%s refused: check the identity file (%s) and the server's authorized_keys: %v",
				b.user, b.addr, b.describeIdentities(usedAgent), err))
		}
		return nil, fmt.Errorf("sftp: log in to %s: %v", b.addr, err)
	}
	client := ssh.NewClient(sc, chans, reqs)
	sftpClient, err := sftp.NewClient(client, sftp.UseConcurrentWrites(true), sftp.UseFstat(true))
	if err != nil {
		client.Close()
		if parent.Err() != nil || ctx.Err() != nil {
			return nil, failed("start SFTP on", err)
		}
		return nil, fmt.Errorf("sftp: start SFTP on %s (is the sftp subsystem enabled?): %v", b.addr, err)
	}
	if !stop() {
		// ctx ended just now and the deadline may be set: give up this one.
		sftpClient.Close()
		client.Close()
		return nil, failed("connect to", ctx.Err())
	}
	c := &conn{ssh: client, sftp: sftpClient, dead: make(chan struct{})}
	_, c.posixRename = sftpClient.HasExtension("posix-rename@openssh.com")
	_, c.fsync = sftpClient.HasExtension("fsync@openssh.com")
	go func() {
		_ = client.Wait()
		close(c.dead)
		sftpClient.Close()
	}()
	go b.keepAliveLoop(c)
	return c, nil
}

func (b *Backend) describeIdentities(withAgent bool) string {
	s := strings.Join(b.identities, ", ")
	if withAgent {
		if s != "" {
			s += ", "
		}
		s += "ssh-agent keys"
	}
	if s == "" {
		return "none"
	}
	return s
}

// hostKeyError explains a failed host key check and how to fix it.
func (b *Backend) hostKeyError(key ssh.PublicKey, err error) error {
	fp := ssh.FingerprintSHA256(key)
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &ke) && len(ke.Want) == 0:
		return fmt.Errorf("SFTP host key of %s (%s %s) is unknown: it is not in %s; after checking the fingerprint, add it with `%s >> %s`",
			b.addr, key.Type(), fp, b.knownHosts, b.keyscan(), b.knownHosts)
	case errors.As(err, &ke):
		w := ke.Want[0]
		return fmt.Errorf("SFTP host key of %s (%s %s) does not match %s line %d: possible man-in-the-middle attack; if the server's key really changed, remove the old entry (ssh-keygen -R '%s' -f %s) and add the new one",
			b.addr, key.Type(), fp, w.Filename, w.Line, knownhosts.Normalize(b.addr), b.knownHosts)
	case errors.As(err, &re):
		return fmt.Errorf("SFTP host key of %s (%s) is marked revoked in %s", b.addr, fp, re.Revoked.Filename)
	}
	return fmt.Errorf("SFTP host key of %s: %w", b.addr, err)
}

// keepAliveLoop closes c when the server stops answering keepalives, so
// calls fail (and the next one redials) instead of hanging.
func (b *Backend) keepAliveLoop(c *conn) {
	t := time.NewTicker(b.keepAlive)
	defer t.Stop()
	for {
		select {
		case <-c.dead:
			return
		case <-t.C:
		}
		reply := make(chan error, 1)
		go func() {
			_, _, err := c.ssh.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
		select {
		case <-c.dead:
			return
		case err := <-reply:
			if err != nil {
				c.close()
				return
			}
		case <-time.After(b.keepAlive):
			c.close()
			return
		}
	}
}

// client returns a live connection, dialling one if needed.
func (b *Backend) client(ctx context.Context) (*conn, *slot, bool, error) {
	if b.closed.Load() {
		return nil, nil, false, backend.Permanent(fmt.Errorf("sftp %s: backend closed", b.addr))
	}
	s := b.slots[b.next.Add(1)%uint64(len(b.slots))]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil && !s.conn.isDead() {
		return s.conn, s, false, nil
	}
	if s.conn != nil {
		s.conn.close()
		s.conn = nil
	}
	c, err := b.dial(ctx)
	if err != nil {
		return nil, nil, false, err
	}
	if b.closed.Load() {
		c.close()
		return nil, nil, false, backend.Permanent(fmt.Errorf("sftp %s: backend closed", b.addr))
	}
	s.conn = c
	return c, s, true, nil
}

// drop forgets c if it is still s's connection.
func (s *slot) drop(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == c {
		s.conn = nil
	}
	c.close()
}

// isConnError reports whether err means the connection is unusable (as
// opposed to an answer from the server about a file).
func isConnError(c *conn, err error) bool {
	if c.isDead() {
		return true
	}
	var se *sftp.StatusError
	if errors.As(err, &se) {
		return se.FxCode() == sftp.ErrSSHFxConnectionLost || se.FxCode() == sftp.ErrSSHFxNoConnection
	}
	return errors.Is(err, sftp.ErrSSHFxConnectionLost) ||
		errors.Is(err, sftp.ErrSSHFxNoConnection) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) && !errors.Is(err, backend.ErrShortRead)
}

// do runs fn on a connection. It returns when fn does or ctx ends,
// whichever comes first. If the connection turns out dead and was not
// freshly dialled, fn is run once more on a new connection.
func do[T any](ctx context.Context, b *Backend, op string, h backend.Handle, fn func(*conn) (T, error)) (T, error) {
	var zero T
	for try := 0; ; try++ {
		if err := ctx.Err(); err != nil {
			return zero, fmt.Errorf("sftp %s %v: %w", op, h, err)
		}
		c, s, fresh, err := b.client(ctx)
		if err != nil {
			return zero, err
		}
		type result struct {
			v   T
			err error
		}
		ch := make(chan result, 1)
		go func() {
			v, err := fn(c)
			ch <- result{v, err}
		}()
		var r result
		select {
		case <-ctx.Done():
			return zero, fmt.Errorf("sftp %s %v: %w", op, h, ctx.Err())
		case r = <-ch:
		}
		if r.err == nil {
			return r.v, nil
		}
		if isConnError(c, r.err) {
			s.drop(c)
			if !fresh && try == 0 {
				continue
			}
			return zero, fmt.Errorf("SFTP connection to %s lost: %s %v: %w", b.addr, op, h, r.err)
		}
		return zero, b.classify(op, h, r.err)
	}
}

func (b *Backend) classify(op string, h backend.Handle, err error) error {
	switch {
	case errors.Is(err, backend.ErrShortRead):
		return fmt.Errorf("sftp %s %v: %w", op, h, err)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("sftp %s %v: %w: %w", op, h, backend.ErrNotFound, err)
	case errors.Is(err, fs.ErrPermission):
		return backend.Permanent(fmt.Errorf("SFTP permission denied on %s as %s: %s %v under %s: %w", b.addr, b.user, op, h, b.root, err))
	}
	var se *sftp.StatusError
	if errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxOpUnsupported {
		return backend.Permanent(fmt.Errorf("sftp %s %v on %s: %w", op, h, b.addr, err))
	}
	return fmt.Errorf("sftp %s %v on %s: %w", op, h, b.addr, err)
}

func (b *Backend) abs(h backend.Handle) string { return path.Join(b.root, h.Path()) }

// mkdirAll creates dir unless it is known to exist.
func (b *Backend) mkdirAll(c *conn, dir string) error {
	if _, ok := b.dirs.Load(dir); ok {
		return nil
	}
	if err := c.sftp.MkdirAll(dir); err != nil {
		return fmt.Errorf("create folder %s: %w", dir, err)
	}
	b.dirs.Store(dir, true)
	return nil
}

func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(err)
	}
	final := b.abs(h)
	dir := path.Dir(final)
	_, err := do(ctx, b, "save", h, func(c *conn) (struct{}, error) {
		return struct{}{}, b.save(c, dir, final, data)
	})
	return err
}

func (b *Backend) save(c *conn, dir, final string, data []byte) error {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := path.Join(dir, tmpPrefix+hex.EncodeToString(rnd[:]))
	if err := b.mkdirAll(c, dir); err != nil {
		return err
	}
	f, err := c.sftp.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if errors.Is(err, fs.ErrNotExist) {
		// The folder went away (e.g. prune removed it): create it again.
		b.dirs.Delete(dir)
		if err := b.mkdirAll(c, dir); err != nil {
			return err
		}
		f, err = c.sftp.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	fail := func(err error) error {
		_ = f.Close()
		_ = c.sftp.Remove(tmp)
		return err
	}
	if len(data) > 0 {
		if _, err := f.Write(data); err != nil {
			return fail(fmt.Errorf("write %s: %w", tmp, err))
		}
	}
	if c.fsync {
		if err := f.Sync(); err != nil {
			return fail(fmt.Errorf("fsync %s: %w", tmp, err))
		}
	}
	if err := f.Close(); err != nil {
		_ = c.sftp.Remove(tmp)
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if c.posixRename {
		err = c.sftp.PosixRename(tmp, final)
	} else {
		// Not atomic against readers, but never partial: remove the old
		// object, then rename the complete new one into place.
		if rerr := c.sftp.Remove(final); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = rerr
		} else {
			err = c.sftp.Rename(tmp, final)
		}
	}
	if err != nil {
		_ = c.sftp.Remove(tmp)
		return fmt.Errorf("rename %s to %s: %w", tmp, final, err)
	}
	return nil
}

func (b *Backend) Load(ctx context.Context, h backend.Handle, offset, length int64) ([]byte, error) {
	if err := h.Valid(); err != nil {
		return nil, backend.Permanent(err)
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("sftp load %v at %d+%d: %w", h, offset, length, backend.ErrShortRead)
	}
	p := b.abs(h)
	return do(ctx, b, "load", h, func(c *conn) ([]byte, error) {
		f, err := c.sftp.Open(p)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		n := length
		if n == 0 {
			fi, err := f.Stat()
			if err != nil {
				return nil, err
			}
			n = fi.Size() - offset
			if n < 0 {
				return nil, fmt.Errorf("at %d+0 of %d bytes: %w", offset, fi.Size(), backend.ErrShortRead)
			}
		}
		buf := make([]byte, n)
		if n == 0 {
			return buf, nil
		}
		got, err := f.ReadAt(buf, offset)
		if int64(got) < n && (err == nil || errors.Is(err, io.EOF)) {
			return nil, fmt.Errorf("at %d+%d: got %d bytes: %w", offset, length, got, backend.ErrShortRead)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		return buf, nil
	})
}

func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := h.Valid(); err != nil {
		return backend.FileInfo{}, backend.Permanent(err)
	}
	p := b.abs(h)
	return do(ctx, b, "stat", h, func(c *conn) (backend.FileInfo, error) {
		fi, err := c.sftp.Stat(p)
		if err != nil {
			return backend.FileInfo{}, err
		}
		if fi.IsDir() {
			return backend.FileInfo{}, fmt.Errorf("%s is a folder: %w", p, fs.ErrNotExist)
		}
		return backend.FileInfo{Name: h.Name, Size: fi.Size(), ModTime: fi.ModTime()}, nil
	})
}

func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(err)
	}
	p := b.abs(h)
	_, err := do(ctx, b, "remove", h, func(c *conn) (struct{}, error) {
		fi, err := c.sftp.Lstat(p)
		if err != nil {
			return struct{}{}, err
		}
		if fi.IsDir() {
			return struct{}{}, fmt.Errorf("%s is a folder: %w", p, fs.ErrNotExist)
		}
		return struct{}{}, c.sftp.Remove(p)
	})
	return err
}

func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if t == backend.ConfigFile {
		return backend.ListConfig(ctx, b.Stat, fn)
	}
	// Read the listing first, then call fn outside the connection's
	// goroutine, so fn may call the backend and its errors stop the walk.
	dir := path.Join(b.root, backend.Dir(t))
	infos, err := do(ctx, b, "list", backend.Handle{Type: t, Name: "*"}, func(c *conn) ([]backend.FileInfo, error) {
		return b.list(ctx, c, t, dir)
	})
	if err != nil {
		return err
	}
	for _, fi := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(fi); err != nil {
			return err
		}
	}
	return nil
}

// list reads dir and, for packs and WAL, its sub-folders.
func (b *Backend) list(ctx context.Context, c *conn, t backend.FileType, dir string) ([]backend.FileInfo, error) {
	entries, err := c.sftp.ReadDirContext(ctx, dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []backend.FileInfo
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, tmpPrefix) {
			continue
		}
		if e.IsDir() {
			if t != backend.PackFile && t != backend.WALFile {
				continue
			}
			sub, err := c.sftp.ReadDirContext(ctx, path.Join(dir, name))
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed while listing
			}
			if err != nil {
				return nil, err
			}
			for _, se := range sub {
				if !se.Mode().IsRegular() || strings.HasPrefix(se.Name(), tmpPrefix) {
					continue
				}
				n := se.Name()
				if t == backend.WALFile {
					n = name + "/" + n
				}
				out = append(out, backend.FileInfo{Name: n, Size: se.Size(), ModTime: se.ModTime()})
			}
			continue
		}
		if !e.Mode().IsRegular() {
			continue
		}
		out = append(out, backend.FileInfo{Name: name, Size: e.Size(), ModTime: e.ModTime()})
	}
	return out, nil
}

// Close closes every connection; later calls fail.
func (b *Backend) Close() error {
	b.closed.Store(true)
	for _, s := range b.slots {
		s.mu.Lock()
		if s.conn != nil {
			s.conn.close()
			s.conn = nil
		}
		s.mu.Unlock()
	}
	return nil
}

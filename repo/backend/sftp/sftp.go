package sftp

import (
	"context"
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

// Location is sftp://user@host:port/path.
func (b *Backend) Location() string {
	p := b.root
	if !strings.HasPrefix(p, "/") {
		p = "/~/" + p
	}
	return "sftp://" + b.user + "@" + b.addr + p
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

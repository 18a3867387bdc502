package sftp

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pgvault/pgvault/repo/backend"
)

// Logging in: the SSH handshake, the host key check against known_hosts,
// the identities offered, and errors that say how to fix each.

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

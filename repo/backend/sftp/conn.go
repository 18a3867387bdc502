package sftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/pgvault/pgvault/repo/backend"
)

// Connections: each slot holds one SSH connection with its SFTP session,
// redialled when it dies; do runs a call on one and retries a call that
// found its connection dead once on a fresh one.

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

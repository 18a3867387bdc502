// Package sftp stores a repository in a folder on an SSH server, over SFTP
// (github.com/pkg/sftp on golang.org/x/crypto/ssh), with the same object
// layout as every other backend.
//
// Save writes a temporary file beside the object, fsyncs it (when the
// server has the fsync@openssh.com extension) and renames it into place
// with posix-rename@openssh.com, which replaces atomically. A server
// without that extension gets remove-then-rename, which leaves a short
// window with no object (never a partial one). Load opens the file and
// reads exactly the requested range.
//
// Host keys are always checked against a known_hosts file; an unknown or
// changed key is a permanent error that says how to fix it. Authentication
// uses an identity file, the default ~/.ssh keys, or ssh-agent.
//
// Connections are dialled lazily and redialled when they die: a broken
// connection fails the calls in flight with a transient error (retried by
// package retry), and the next call dials again. Keepalives detect a server
// that stops answering.
package sftp

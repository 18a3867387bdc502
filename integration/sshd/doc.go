// Package sshd starts a real OpenSSH server (/usr/sbin/sshd) for tests: on a
// free port of 127.0.0.1, with a generated host key and client key, a
// known_hosts file that trusts the host key, and the internal SFTP
// subsystem. It stops when the test ends.
//
// OpenSSH's server comes from the openssh-server package (`make deps`
// installs it). The tests run as root: sshd needs it to switch users, and
// the server is configured to let root log in with the client key only.
package sshd

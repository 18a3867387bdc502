package sshd_test

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/integration/sshd"
)

// TestOpenSSHClientLogsIn checks the server, keys and known_hosts with
// OpenSSH's own client, with strict host key checking.
func TestOpenSSHClientLogsIn(t *testing.T) {
	srv := sshd.Start(t)
	run := func() (string, error) {
		out, err := exec.Command("ssh", "-F", "none", "-i", srv.IdentityFile,
			"-o", "UserKnownHostsFile="+srv.KnownHostsFile, "-o", "StrictHostKeyChecking=yes",
			"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
			"-p", strconv.Itoa(srv.Port), srv.User+"@"+srv.Host, "echo", "hello").CombinedOutput()
		return string(out), err
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Fatalf("OpenSSH client missing (it comes with openssh-server): run `make deps`: %v", err)
	}
	out, err := run()
	if err != nil || strings.TrimSpace(out) != "hello" {
		t.Fatalf("ssh: %v: %s", err, out)
	}
	srv.Restart()
	out, err = run()
	if err != nil || strings.TrimSpace(out) != "hello" {
		t.Fatalf("ssh after restart: %v: %s", err, out)
	}
}

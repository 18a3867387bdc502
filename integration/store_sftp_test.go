package integration

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pgvault/pgvault/integration/pgtest"
	"github.com/pgvault/pgvault/integration/sshd"
)

// TestStoreEndToEndSFTP is the main job against OpenSSH's sshd. The
// restored servers run restore_command as postgres, so the repository URL
// names postgres's own copies of the client key and known_hosts (0600),
// as an operator's would.
func TestStoreEndToEndSFTP(t *testing.T) {
	srv := sshd.Start(t)
	keys := pgtest.TempDir(t)
	identity, known := filepath.Join(keys, "id_ed25519"), filepath.Join(keys, "known_hosts")
	for src, dst := range map[string]string{srv.IdentityFile: identity, srv.KnownHostsFile: known} {
		data, err := os.ReadFile(src)
		if err == nil {
			err = os.WriteFile(dst, data, 0o600)
		}
		if err == nil {
			err = exec.Command("chown", "postgres:postgres", dst).Run()
		}
		if err != nil {
			t.Fatalf("copy %s for postgres: %v", src, err)
		}
	}
	u, err := url.Parse(srv.URL(filepath.Join(t.TempDir(), "e2e")))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("identity", identity)
	q.Set("known_hosts", known)
	u.RawQuery = q.Encode()
	storeEndToEnd(t, u.String(), nil)
}

package integration

import (
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
	u, err := srv.URLForUser(filepath.Join(t.TempDir(), "e2e"), pgtest.TempDir(t), "postgres")
	if err != nil {
		t.Fatal(err)
	}
	storeEndToEnd(t, u, nil)
}

package integration

import (
	"strings"
	"testing"

	"github.com/pgvault/pgvault/integration/pgtest"
	"github.com/pgvault/pgvault/integration/swiftaio"
)

// The Swift tests: the main job, the fault campaign and a server restart
// mid-backup, each against a real OpenStack Swift all-in-one
// (integration/swiftaio).

// TestStoreEndToEndSwift is the main job against Swift.
func TestStoreEndToEndSwift(t *testing.T) {
	srv := swiftaio.Start(t)
	storeEndToEnd(t, srv.URL("e2e"), srv.Env())
}

// setStoreEnv sets a store's credentials for the test too: the servers it
// starts inherit them, and with them their restore_command.
func setStoreEnv(t *testing.T, env []string) {
	for _, kv := range env {
		k, val, _ := strings.Cut(kv, "=")
		t.Setenv(k, val)
	}
}

// TestFaultCampaignSwift is the campaign on a Swift repository: the
// faults are injected under the retry wrapper, on top of the Swift
// backend's own requests.
func TestFaultCampaignSwift(t *testing.T) {
	srv := swiftaio.Start(t)
	setStoreEnv(t, srv.Env())
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 2)
	c.CreateMarkers(t)
	faultCampaign(t, c, newPostgresVaultAt(t, srv.URL("campaign"), srv.Env()))
}

// TestFaultSwiftRestartMidBackup restarts the Swift servers while a
// backup streams into them.
func TestFaultSwiftRestartMidBackup(t *testing.T) {
	srv := swiftaio.Start(t)
	setStoreEnv(t, srv.Env())
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 2)
	restartMidBackup(t, c, "Swift", srv.URL("repo"), srv.Env(), srv.Restart)
}

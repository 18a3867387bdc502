package integration

import (
	"testing"

	"github.com/pgvault/pgvault/integration/azurite"
	"github.com/pgvault/pgvault/integration/pgtest"
)

// TestFaultAzuriteRestartMidBackup: Azurite restarted (SIGTERM, which
// keeps its data) while a backup streams into it.
func TestFaultAzuriteRestartMidBackup(t *testing.T) {
	srv := azurite.Start(t)
	setStoreEnv(t, srv.Env())
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 2)
	restartMidBackup(t, c, "Azurite", srv.URL("repo"), srv.Env(), srv.Restart)
}

// TestFaultCampaignAzure is the fault campaign on Azurite: faults injected
// between pgvault and the Azure backend, whose own errors go through the
// same retry wrapper.
func TestFaultCampaignAzure(t *testing.T) {
	srv := azurite.Start(t)
	setStoreEnv(t, srv.Env())
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 2)
	c.CreateMarkers(t)
	faultCampaign(t, c, newPostgresVaultAt(t, srv.URL("campaign"), srv.Env()))
}

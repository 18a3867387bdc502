package integration

import (
	"testing"

	"github.com/pgvault/pgvault/integration/fakegcs"
)

// TestStoreEndToEndGCS is the main job against fake-gcs-server.
func TestStoreEndToEndGCS(t *testing.T) {
	srv := fakegcs.Start(t)
	storeEndToEnd(t, srv.URL("e2e"), srv.Env())
}

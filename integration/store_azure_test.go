package integration

import (
	"testing"

	"github.com/pgvault/pgvault/integration/azurite"
)

// TestStoreEndToEndAzure is the main job against Azurite, with the account
// key in the environment as an operator would set it.
func TestStoreEndToEndAzure(t *testing.T) {
	srv := azurite.Start(t)
	storeEndToEnd(t, srv.URL("e2e"), srv.Env())
}

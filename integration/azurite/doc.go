// Package azurite starts a real Azure Blob Storage API for tests:
// Microsoft's emulator Azurite (azurite-blob), on a free port of
// 127.0.0.1, with its data in a temporary folder, the well-known
// development account devstoreaccount1 and one container, stopped when the
// test ends.
//
// Azurite is not vendored: `make deps` (.ci/install-azurite) installs the
// npm package into $HOME/.cache/pgvault/azurite (or point
// $PGVAULT_AZURITE at an azurite-blob). A test that finds none fails with
// that fix; it never skips.
//
// Azurite keeps its metadata in memory and writes it to disk every five
// seconds and when it stops: Stop and Restart (SIGTERM) lose nothing,
// Kill (SIGKILL) may lose the last seconds of writes, which Azure itself
// never would. Crash tests of pgvault belong on the pgvault side.
package azurite

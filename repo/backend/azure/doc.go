// Package azure stores a repository in an Azure Blob Storage container
// (Azure, or an emulator such as Azurite), under an optional name prefix,
// with the same object layout as every other backend (see
// backend.Handle.Path).
//
// Save writes a block blob. An object up to Options.BlockSize is one Put
// Blob request; a larger one (a big pack) is staged in blocks, several at
// once, and made visible by one Put Block List, so either way a reader sees
// the old blob or the new one, never a part. Each Save names its blocks
// with a random tag, so two Saves of the same name racing each other never
// commit each other's blocks. A commit drops every other uncommitted block
// of that blob, though, so the loser of such a race stages its blocks
// again, a few times, then fails transiently for package retry to repeat.
// Only objects above BlockSize (packs and indexes, named by their content
// and saved once) take this path; locks and WAL entries, which are
// overwritten, are single requests. Load asks for a byte range and checks
// the length of what came back.
//
// Credentials come from Options, which OptionsFromEnv fills from the
// variables Azure's own tools read, tried in this order: a connection
// string, an account name and key, a SAS token, else the default Azure
// credential chain (environment service principal, workload identity,
// managed identity, Azure CLI). None of them ever appears in Location or
// in an error.
//
// The SDK's own retries are switched off: package retry does that, with
// one policy for every backend. A missing blob becomes backend.ErrNotFound;
// failed authentication, denied access, a missing container and other
// requests the service rejects as malformed become permanent errors with a
// message saying what to check; timeouts, throttling and server errors
// stay transient.
package azure

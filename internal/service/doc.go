// Package service is pgvault's service layer: the one place that composes
// repo, backup, stream and fs into the workflows an operator runs (open a
// site's repository with its secrets, cache and defaults; back up,
// restore, prune, check, verify, mount, stream and archive WAL, sum a
// repository up). Each workflow takes an options struct and returns a
// typed report; cmd/pgvault renders reports as text or JSON, and the agent
// turns the same reports into state, metrics and alerts. Neither holds
// workflow logic of its own, so the CLI and the agent cannot drift apart.
//
// Defaults live here or below (the compression level in chunk, the cache
// folder in DefaultCacheDir), once.
package service

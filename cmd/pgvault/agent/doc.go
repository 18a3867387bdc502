// Package agent is the pgvault daemon (`pgvault agent --config FILE`):
// for every site of its YAML configuration it supervises a WAL streamer,
// takes scheduled base backups, applies retention, checks the WAL archive
// for gaps and, when asked, runs recovery drills; it reports through
// Prometheus metrics, an HTTP status document, a JSON state file and
// pghoard-style alert files.
//
// The package holds the wiring only: base backups, retention, streaming,
// gap checks and restores are the backup, stream and repo packages'. It
// lives under cmd/pgvault because only that layer may import backup and
// stream together.
//
// Concurrency, in short (docs/explanation/agent.md has the long form):
// every site is one goroutine tree under one context. Its streamer runs
// on its own; its jobs (base backup, prune, WAL check, drill) run one at a
// time on one worker goroutine, so a site never takes two backups at once
// and never prunes during its own backup. A reload (SIGHUP) cancels and
// restarts only the parts of a site whose configuration changed; the end
// of the agent's context (SIGTERM) cancels everything, and Run returns
// once every streamer has stored the WAL it received.
package agent

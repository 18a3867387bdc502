// Package backendtest is the one conformance suite every backend.Backend
// implementation runs: the in-memory and file backends, S3 against a real
// MinIO, SFTP against a real OpenSSH server, and the retry wrapper around the
// fault-injecting wrapper.
//
// Run checks the contract written on backend.Backend: atomic, replacing
// saves; exact-range loads that fail rather than return a short slice;
// ErrNotFound for missing objects; listing by FileType (packs by bare name,
// WAL entries with their timeline folder, config with an empty name);
// concurrent use; prompt return on a cancelled context; rejection of invalid
// handles as permanent errors.
package backendtest

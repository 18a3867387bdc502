// Package chunk turns byte streams into content-addressed, sealed blobs.
//
// It holds the pure parts of the repository format: splitting a stream into
// chunks (fixed page-aligned chunks for PostgreSQL relation files, content-
// defined chunks for everything else), naming a chunk by a keyed hash of its
// plaintext, and the blob codec (zstd, then AES-256-GCM). It does no I/O
// beyond reading an io.Reader, and imports nothing else of pgvault.
package chunk

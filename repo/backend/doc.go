// Package backend defines the storage interface every pgvault repository
// lives on, and the error predicates callers branch on.
//
// A backend stores opaque, immutable objects named by a Handle. It knows
// nothing of encryption, packs or PostgreSQL: those belong to the layers
// above. Implementations live in sub-packages (file, s3, sftp, mem), and
// cross-cutting behaviour (retry, fault injection) wraps the interface.
package backend

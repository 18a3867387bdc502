// Package faulty wraps a backend.Backend and injects faults, for tests of
// the layers above: transient errors, added latency, short reads, partial
// writes and flipped bits.
//
// Every fault but the bit flip is reported as an error, so a caller that
// retries (package retry) recovers from it; a partial write leaves a
// truncated object behind, which the retried Save must replace. A bit flip
// returns corrupted data as a success: the repository layer must detect it
// through its authenticated encryption. No fault ever returns a short slice
// as a success.
//
// Faults are drawn from a seeded generator, so a single-goroutine test sees
// the same faults on every run.
package faulty

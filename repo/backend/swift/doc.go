// Package swift stores a repository in an OpenStack Swift container, under
// an optional object-name prefix, with the same object layout as every
// other backend (see backend.Handle.Path). It uses github.com/ncw/swift/v2.
//
// Credentials come from Options, and what Options leaves empty from the
// environment exactly as the library's ApplyEnvironment reads it: Keystone
// v3 (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME,
// OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME, OS_REGION_NAME, or
// application credentials), Keystone v2, or Swift's v1 auth (ST_AUTH,
// ST_USER, ST_KEY). A pre-authenticated OS_STORAGE_URL plus OS_AUTH_TOKEN
// works too (Options.StorageURL and AuthToken), though without an auth URL
// an expired token cannot be renewed.
//
// Save is one PUT with a Content-Length and the MD5 as ETag: Swift makes
// an object visible only once its whole body has arrived and matched the
// ETag, so a reader sees the old object or the new one, never a part, and
// a body corrupted on the way is refused by the server. The body streams
// from the caller's slice; nothing is copied. No segmentation (static or
// dynamic large objects) is needed: Swift's default single-object limit is
// 5 GiB, pgvault's packs are about 16 MiB and the pack format bounds any
// pack at 1 GiB (its offsets are 32-bit), and index, snapshot and WAL
// objects are smaller still. Keeping every object a
// plain object also keeps Save atomic, which a large-object manifest
// written after its segments would not be.
//
// Load is a GET with a Range header and checks the length that came back.
// Remove is a DELETE, which Swift answers with 404 for a missing object.
// List pages through the container listing by prefix and marker.
//
// The library's own retries are limited to one, so that an expired token
// is renewed once (Swift answers 401); package retry does every other
// retry with one policy for every backend. Not-found answers become
// backend.ErrNotFound; failed authentication, 401 and 403 answers and a
// missing container become permanent errors saying what to check; the
// rest (5xx, timeouts, refused connections) stay transient. No error or
// Location shows a password, key or token.
package swift

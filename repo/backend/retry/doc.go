// Package retry wraps a backend.Backend so that transient failures are
// retried with exponential backoff and jitter.
//
// What is retried: every error for which backend.IsPermanent is false,
// including backend.ErrShortRead (an object store may briefly serve a
// shorter object than the one just written). What is not: permanent errors
// (bad credentials, access denied, ErrNotFound, invalid handles) and a
// cancelled or expired context, which ends the call at once.
//
// Saves are safe to repeat because the data is a byte slice and every
// backend's Save replaces the object atomically. A Remove whose first
// attempt succeeded but whose reply was lost may report ErrNotFound on the
// retry. A List that fails part-way is restarted, and the callback is not
// called again for names it has already seen; an error from the callback
// itself is never retried.
//
// OnRetry and OnGiveUp let the caller raise alerts and metrics; OnGiveUp is
// called only when the retries are used up (attempts or elapsed time), not
// for permanent errors, which are part of normal control flow.
package retry

// Package s3 stores a repository in an S3 bucket (AWS or any S3-compatible
// server such as MinIO), under an optional key prefix, with the same object
// layout as every other backend (see backend.Handle.Path).
//
// Save is a single PutObject, which S3 makes atomic: readers see the old
// object or the new one, never a part. Load uses a Range request and checks
// the length of what came back. Remove checks that the object exists first,
// because DeleteObject reports success for a missing key.
//
// The SDK's own retries are switched off: package retry does that, with
// one policy for every backend. Not-found answers become backend.ErrNotFound;
// authentication failures, access denied and a missing bucket become
// permanent errors with a message saying what to check.
package s3

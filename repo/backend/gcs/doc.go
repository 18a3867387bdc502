// Package gcs stores a repository in a Google Cloud Storage bucket, under an
// optional object prefix, with the same object layout as every other backend
// (see backend.Handle.Path), through cloud.google.com/go/storage's JSON API.
//
// Credentials are Google's Application Default Credentials, found as the
// library finds them (GOOGLE_APPLICATION_CREDENTIALS, gcloud's
// application_default_credentials.json, the metadata server). With an
// emulator endpoint (Options.Endpoint, or STORAGE_EMULATOR_HOST as the library
// reads it) requests carry no credentials at all.
//
// Save uploads in one request up to Options.ChunkSize and as a resumable
// upload in ChunkSize parts above it; either way GCS makes the object visible
// only once it is complete, so Save is atomic. Each Save sends the data's
// CRC32C, which the server checks. Load reads a byte range and checks the
// length of what came back.
//
// The library's own retries are switched off: package retry does that, with
// one policy for every backend. Not-found answers become backend.ErrNotFound;
// missing credentials, access denied, a missing bucket and invalid requests
// become permanent errors saying what to check. Messages never carry tokens
// or credential files' contents: they name the bucket, the endpoint and what
// was being done.
package gcs

// Package all is the one place that knows every storage backend: it turns
// a repository URL into a configured backend, wrapped in the retry policy.
//
// Accepted URLs:
//
//	/abs/path, rel/path              a local folder (file backend)
//	file:///abs/path                 the same, as a URL
//	s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true
//	                                 S3 or an S3-compatible server; credentials
//	                                 come from AWS_ACCESS_KEY_ID and
//	                                 AWS_SECRET_ACCESS_KEY (or the AWS config)
//	sftp://user@host:port/path?identity=/key&known_hosts=/file
//	                                 a folder on an SSH server
//	swift://container/prefix?auth_url=https://keystone:5000/v3&region=R&auth_version=3
//	                                 OpenStack Swift; credentials come from the
//	                                 OS_* variables (Keystone) or ST_AUTH,
//	                                 ST_USER and ST_KEY (v1 auth); auth_url,
//	                                 region and auth_version override
//	                                 OS_AUTH_URL, OS_REGION_NAME, ST_AUTH_VERSION
//	gs://bucket/prefix?endpoint=http://127.0.0.1:4443&project=ID
//	                                 Google Cloud Storage; Application Default
//	                                 Credentials (GOOGLE_APPLICATION_CREDENTIALS),
//	                                 or none with an emulator's endpoint (also
//	                                 STORAGE_EMULATOR_HOST); project only for
//	                                 creating the bucket
//	azure://container/prefix?account=NAME&endpoint=http://127.0.0.1:10000/devstoreaccount1
//	                                 Azure Blob Storage (endpoint for emulators and
//	                                 other clouds); credentials come from
//	                                 AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY,
//	                                 AZURE_STORAGE_SAS_TOKEN or the default Azure
//	                                 credential chain
//
// No backend registers itself: adding one means adding a case here.
package all

// Package translate reads another PostgreSQL backup tool's configuration
// (pghoard's JSON, pgBackRest's and Barman's INI files, WAL-G's JSON or
// YAML) and writes the equivalent pgvault agent configuration as YAML
// text, with a comment on every setting it could not carry over.
//
// The output is text written by hand, not marshalled, so that comments
// can sit beside the fields they explain; tests check that it loads with
// the agent's strict parser. Secret values (passwords, keys, cipher
// passphrases) are never written out, not even in comments: the output
// says where each secret goes instead.
//
// The package imports nothing of pgvault's and does no I/O except in
// TranslateFile, which reads the named file (and, for Barman, the
// configuration_files_directory it names).
package translate

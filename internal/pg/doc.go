// Package pg holds the PostgreSQL helpers that several layers need:
// parsing a connection string without leaking its password, connecting,
// turning a connection or protocol error into the one line an operator
// reads (with the setting to change), the server's major version, SHOW of
// a setting and identifier quoting. The CLI, the agent and the workflows
// of internal/service all use these; nothing else explains a PostgreSQL
// error.
package pg

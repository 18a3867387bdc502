// Package backup takes PostgreSQL base backups into a repository and gives
// them back: ingest of a data directory's files (from BASE_BACKUP's tar
// stream or from a local folder), restore, PITR planning, recovery
// configuration and retention. It knows PostgreSQL's data directory layout;
// it does not talk FUSE.
package backup

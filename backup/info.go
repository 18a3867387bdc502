package backup

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// SnapshotKind marks snapshots that are PostgreSQL base backups.
const SnapshotKind = "basebackup"

// Info is what a base backup's manifest records about PostgreSQL. It is
// stored as the snapshot's Meta.
type Info struct {
	SystemIdentifier string        `json:"system_identifier"`
	ServerVersion    string        `json:"server_version"`
	Timeline         uint32        `json:"timeline"`
	StartLSN         pglogrepl.LSN `json:"-"`
	StopLSN          pglogrepl.LSN `json:"-"`
	StopTimeline     uint32        `json:"stop_timeline"`
	StartTime        time.Time     `json:"start_time"`
	StopTime         time.Time     `json:"stop_time"`
	Label            string        `json:"label"`
	BackupLabel      string        `json:"backup_label"`
	TablespaceMap    string        `json:"tablespace_map,omitempty"`
	Tablespaces      []Tablespace  `json:"tablespaces"`
	// Standalone backups hold the WAL from start to stop in pg_wal and
	// start without any archive.
	Standalone bool `json:"standalone"`
	// Warnings are what PostgreSQL reported during the backup, e.g.
	// pages that failed checksum verification.
	Warnings         []string `json:"warnings,omitempty"`
	ChecksumFailures bool     `json:"checksum_failures,omitempty"`
	BytesRead        int64    `json:"bytes_read"`
	// Method is how the files were read (stream or local; "" in backups
	// taken before pgvault could read them itself, which streamed).
	Method Method `json:"method,omitempty"`
	// WALSegmentSize is the cluster's wal_segment_size in bytes.
	WALSegmentSize uint64 `json:"wal_segment_size"`
	// Parent is, for a synthetic backup, the backup its replay started
	// from. The new backup references chunks, not the parent: pruning the
	// parent never breaks it.
	Parent string `json:"parent,omitempty"`
	// Databases lists the cluster's databases when the backup ended, for
	// partial restores (restore --db-include); empty when the backup
	// could not open a plain session to ask, and in older backups.
	Databases []Database `json:"databases,omitempty"`
}

// SegmentSize is the cluster's WAL segment size (16 MiB if unrecorded).
func (i *Info) SegmentSize() uint64 {
	if i.WALSegmentSize == 0 {
		return wal.DefaultSegmentSize
	}
	return i.WALSegmentSize
}

// MarshalJSON writes LSNs in PostgreSQL's text form.
func (i Info) MarshalJSON() ([]byte, error) {
	type plain Info
	return json.Marshal(struct {
		plain
		StartLSN string `json:"start_lsn"`
		StopLSN  string `json:"stop_lsn"`
	}{plain(i), i.StartLSN.String(), i.StopLSN.String()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (i *Info) UnmarshalJSON(data []byte) error {
	type plain Info
	var aux struct {
		plain
		StartLSN string `json:"start_lsn"`
		StopLSN  string `json:"stop_lsn"`
	}
	if err := json.Unmarshal(data, &aux); err != nil {
		return err
	}
	*i = Info(aux.plain)
	var err error
	if i.StartLSN, err = pglogrepl.ParseLSN(aux.StartLSN); err != nil {
		return fmt.Errorf("start_lsn: %w", err)
	}
	if i.StopLSN, err = pglogrepl.ParseLSN(aux.StopLSN); err != nil {
		return fmt.Errorf("stop_lsn: %w", err)
	}
	return nil
}

// InfoOf decodes the PostgreSQL facts of a base-backup snapshot.
func InfoOf(s *repo.Snapshot) (*Info, error) {
	if s.Kind != SnapshotKind {
		return nil, fmt.Errorf("snapshot %s is a %q snapshot, not a base backup", s.ShortID(), s.Kind)
	}
	var info Info
	if err := json.Unmarshal(s.Meta, &info); err != nil {
		return nil, fmt.Errorf("snapshot %s: backup info: %w", s.ShortID(), err)
	}
	return &info, nil
}

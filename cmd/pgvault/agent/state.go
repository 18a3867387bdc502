package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pgvault/pgvault/internal/service"
)

// StateVersion is the version of the state document's layout.
const StateVersion = 1

// State is the agent's state document: the JSON state file (pghoard's
// json_state_file_path) and the answer of GET /status. Times are UTC;
// absent times were never reached.
type State struct {
	Version     int                   `json:"version"`
	PID         int                   `json:"pid"`
	AgentVer    string                `json:"agent_version"`
	Started     time.Time             `json:"started"`
	Updated     time.Time             `json:"updated"`
	ConfigFile  string                `json:"config_file"`
	Loaded      time.Time             `json:"config_loaded"`
	ReloadError string                `json:"reload_error,omitempty"`
	HTTPListen  string                `json:"http_listen,omitempty"`
	Sites       map[string]*SiteState `json:"sites"`
	Alerts      []Alert               `json:"alerts"`
}

// SiteState is one site's part of the state document.
type SiteState struct {
	Active      bool           `json:"active"`
	Mode        string         `json:"mode"`
	Repo        string         `json:"repo"`
	Maintenance bool           `json:"maintenance"`
	Server      *ServerState   `json:"server,omitempty"`
	Streamer    *StreamerState `json:"streamer,omitempty"`
	Backup      BackupState    `json:"backup"`
	Prune       PruneState     `json:"prune"`
	WALCheck    WALCheckState  `json:"wal_check"`
	Drill       DrillState     `json:"drill"`
	Synthetic   SyntheticState `json:"synthetic"`
	// WriteOnly: the site's password opens a write-only key, so
	// retention, restore drills and synthetic backups (which read
	// backed-up contents) are left to a host with a full key.
	WriteOnly bool                `json:"write_only,omitempty"`
	RepoStats *RepoState          `json:"repository,omitempty"`
	PITR      *service.PITRWindow `json:"pitr,omitempty"`
	WAL       WALArchiveState     `json:"wal"`
	Uploads   UploadState         `json:"uploads"`
	Alerts    []Alert             `json:"alerts"`
}

// ServerState is what the agent last learned about PostgreSQL.
type ServerState struct {
	Node             string    `json:"node"`
	Version          string    `json:"version"`
	SystemIdentifier string    `json:"system_identifier,omitempty"`
	Seen             time.Time `json:"seen"`
}

// StreamerState is the WAL streamer's (stream mode).
type StreamerState struct {
	Running    bool       `json:"running"`
	Connected  bool       `json:"connected"`
	Node       string     `json:"node,omitempty"`
	Timeline   uint32     `json:"timeline,omitempty"`
	Received   string     `json:"received_lsn,omitempty"`
	Flushed    string     `json:"flushed_lsn,omitempty"`
	ServerEnd  string     `json:"server_end_lsn,omitempty"`
	LagBytes   int64      `json:"lag_bytes"`
	LastFlush  *time.Time `json:"last_flush,omitempty"`
	Restarts   int        `json:"restarts"`
	LastError  string     `json:"last_error,omitempty"`
	RetryAfter *time.Time `json:"retry_after,omitempty"`
}

// BackupState is the base backup job's.
type BackupState struct {
	Running     bool                `json:"running"`
	Count       int                 `json:"count"`
	Last        *service.BackupInfo `json:"last,omitempty"`
	LastAttempt *time.Time          `json:"last_attempt,omitempty"`
	LastError   string              `json:"last_error,omitempty"`
	Next        *time.Time          `json:"next,omitempty"`
	// Taken counts the backups this agent process took.
	Taken int `json:"taken"`
}

// PruneState is retention's.
type PruneState struct {
	Last           *time.Time `json:"last,omitempty"`
	BackupsRemoved int        `json:"backups_removed"`
	WALRemoved     int        `json:"wal_removed"`
	BytesFreed     int64      `json:"bytes_freed"`
	PacksDeleted   int        `json:"packs_deleted"`
	LastError      string     `json:"last_error,omitempty"`
	Next           *time.Time `json:"next,omitempty"`
	Runs           int        `json:"runs"`
}

// WALCheckState is the gap check's.
type WALCheckState struct {
	Last         *time.Time `json:"last,omitempty"`
	OK           bool       `json:"ok"`
	Missing      int        `json:"missing"`
	FirstMissing string     `json:"first_missing,omitempty"`
	From         string     `json:"from,omitempty"`
	To           string     `json:"to,omitempty"`
	LastError    string     `json:"last_error,omitempty"`
	Next         *time.Time `json:"next,omitempty"`
}

// DrillState is the recovery drill's.
type DrillState struct {
	Enabled bool       `json:"enabled"`
	Last    *time.Time `json:"last,omitempty"`
	OK      *bool      `json:"ok,omitempty"`
	Backup  string     `json:"backup,omitempty"`
	Seconds float64    `json:"duration_seconds,omitempty"`
	Message string     `json:"message,omitempty"`
	Next    *time.Time `json:"next,omitempty"`
}

// SyntheticState is the synthetic backup job's.
type SyntheticState struct {
	Enabled bool       `json:"enabled"`
	Running bool       `json:"running"`
	Last    *time.Time `json:"last,omitempty"`
	// Backup and Parent are the last synthetic backup and the backup it
	// was rolled forward from; ConsistentLSN where it is consistent.
	Backup        string     `json:"backup,omitempty"`
	Parent        string     `json:"parent,omitempty"`
	ConsistentLSN string     `json:"consistent_lsn,omitempty"`
	Seconds       float64    `json:"duration_seconds,omitempty"`
	LastError     string     `json:"last_error,omitempty"`
	Next          *time.Time `json:"next,omitempty"`
	// Taken counts the synthetic backups this agent process took.
	Taken int `json:"taken"`
}

// RepoState sums up the repository.
type RepoState struct {
	StoredBytes int64     `json:"stored_bytes"`
	Snapshots   int       `json:"snapshots"`
	WALFiles    int       `json:"wal_files"`
	Updated     time.Time `json:"updated"`
	Error       string    `json:"error,omitempty"`
}

// WALArchiveState says how far WAL is stored.
type WALArchiveState struct {
	LastArchived *time.Time `json:"last_archived,omitempty"`
	LagBytes     *int64     `json:"lag_bytes,omitempty"`
}

// UploadState counts failed uploads.
type UploadState struct {
	Errors  int    `json:"errors"`
	Retries int    `json:"retries"`
	Last    string `json:"last_error,omitempty"`
}

// ReadState reads a state file. A missing file is (nil, nil).
func ReadState(path string) (*State, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	return &st, nil
}

// Running reports whether the agent that wrote the state still runs: its
// process exists and the file was updated within maxAge.
func (s *State) Running(now time.Time, maxAge time.Duration) bool {
	if s == nil || s.PID <= 0 {
		return false
	}
	if err := syscall.Kill(s.PID, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	return now.Sub(s.Updated) <= maxAge
}

// stateWriter writes the state file atomically: every interval, and soon
// after a change is signalled (at most every minGap).
type stateWriter struct {
	path     func() string
	interval time.Duration
	minGap   time.Duration
	build    func() *State
	log      *slog.Logger
	dirty    chan struct{}
	lastErr  string // logged once until it changes or a write succeeds
}

func newStateWriter(path func() string, interval time.Duration, build func() *State, log *slog.Logger) *stateWriter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &stateWriter{path: path, interval: interval, minGap: 200 * time.Millisecond, build: build, log: log, dirty: make(chan struct{}, 1)}
}

// changed asks for a write soon.
func (w *stateWriter) changed() {
	select {
	case w.dirty <- struct{}{}:
	default:
	}
}

// run writes until ctx ends, then once more.
func (w *stateWriter) run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		w.write()
		select {
		case <-ctx.Done():
			w.write()
			return
		case <-t.C:
		case <-w.dirty:
			select { // coalesce a burst of changes
			case <-ctx.Done():
			case <-time.After(w.minGap):
			}
		}
	}
}

func (w *stateWriter) write() {
	st := w.build()
	path := w.path()
	data, err := json.MarshalIndent(st, "", "  ")
	if err == nil {
		if err = os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
			err = writeFileAtomic(path, append(data, '\n'), 0o644)
		}
	}
	switch {
	case err == nil:
		w.lastErr = ""
	case err.Error() != w.lastErr:
		w.lastErr = err.Error()
		w.log.Error("cannot write the state file", "path", path, "err", err)
	}
}

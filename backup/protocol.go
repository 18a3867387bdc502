package backup

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// PostgreSQL 15 sends a base backup as one COPY stream whose CopyData
// messages start with a type byte. pglogrepl's helpers predate this
// framing (they expect one COPY per tablespace), so pgvault reads it itself.
const (
	copyNewArchive = 'n' // archive name \0 tablespace path \0
	copyData       = 'd' // bytes of the current archive, or of the manifest
	copyProgress   = 'p' // int64: bytes sent so far
	copyManifest   = 'm' // the manifest follows in 'd' messages
)

// CopyEvent is one decoded CopyData message of a BASE_BACKUP stream.
type CopyEvent struct {
	Kind           byte
	ArchiveName    string // 'n'
	TablespacePath string // 'n'; empty for the main data directory
	Data           []byte // 'd'; aliases the message buffer
	Progress       int64  // 'p'
}

// ErrBadCopyData is matched by errors from ParseCopyData.
var ErrBadCopyData = errors.New("malformed BASE_BACKUP message")

// ParseCopyData decodes one CopyData payload of a PostgreSQL 15+
// BASE_BACKUP stream.
func ParseCopyData(msg []byte) (CopyEvent, error) {
	if len(msg) == 0 {
		return CopyEvent{}, fmt.Errorf("%w: empty", ErrBadCopyData)
	}
	ev := CopyEvent{Kind: msg[0]}
	body := msg[1:]
	switch msg[0] {
	case copyNewArchive:
		name, rest, ok := bytes.Cut(body, []byte{0})
		if !ok {
			return ev, fmt.Errorf("%w: archive name not terminated", ErrBadCopyData)
		}
		loc, rest, ok := bytes.Cut(rest, []byte{0})
		if !ok || len(rest) != 0 {
			return ev, fmt.Errorf("%w: tablespace path not terminated", ErrBadCopyData)
		}
		ev.ArchiveName, ev.TablespacePath = string(name), string(loc)
		if err := validArchiveName(ev.ArchiveName); err != nil {
			return ev, err
		}
	case copyData:
		ev.Data = body
	case copyProgress:
		if len(body) != 8 {
			return ev, fmt.Errorf("%w: progress message of %d bytes", ErrBadCopyData, len(body))
		}
		ev.Progress = int64(binary.BigEndian.Uint64(body))
	case copyManifest:
		if len(body) != 0 {
			return ev, fmt.Errorf("%w: manifest message carries %d bytes", ErrBadCopyData, len(body))
		}
	default:
		return ev, fmt.Errorf("%w: unknown message type %q", ErrBadCopyData, msg[0])
	}
	return ev, nil
}

// validArchiveName accepts "base.tar" and "<oid>.tar", the only names the
// server sends without server-side compression.
func validArchiveName(name string) error {
	if name == "base.tar" {
		return nil
	}
	oid, ok := strings.CutSuffix(name, ".tar")
	if ok {
		if _, err := strconv.ParseUint(oid, 10, 32); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%w: unexpected archive %q", ErrBadCopyData, name)
}

// ArchiveOID returns the tablespace OID of an archive ("16385.tar"), or 0
// for the main data directory ("base.tar").
func ArchiveOID(name string) uint32 {
	oid, _ := strconv.ParseUint(strings.TrimSuffix(name, ".tar"), 10, 32)
	return uint32(oid)
}

// protocolOptions are BASE_BACKUP's options as pgvault uses them.
type protocolOptions struct {
	Label          string
	FastCheckpoint bool
	WAL            bool // include the WAL from start to stop (standalone)
	NoWait         bool // do not wait for WAL archiving (a streamer stores it)
	MaxRateKB      int  // 0: unlimited; otherwise 32..1048576 kB/s
}

func (o protocolOptions) sql() string {
	parts := []string{
		"LABEL '" + strings.ReplaceAll(o.Label, "'", "''") + "'",
		"PROGRESS",
		"MANIFEST 'yes'",
		"MANIFEST_CHECKSUMS 'CRC32C'",
		"TABLESPACE_MAP",
	}
	if o.FastCheckpoint {
		parts = append(parts, "CHECKPOINT 'fast'")
	} else {
		parts = append(parts, "CHECKPOINT 'spread'")
	}
	if o.WAL {
		// With the WAL in the backup there is nothing to wait for.
		parts = append(parts, "WAL", "WAIT false")
	} else if o.NoWait {
		parts = append(parts, "WAIT false")
	}
	if o.MaxRateKB > 0 {
		parts = append(parts, fmt.Sprintf("MAX_RATE %d", o.MaxRateKB))
	}
	return "BASE_BACKUP (" + strings.Join(parts, ", ") + ")"
}

// Tablespace is one tablespace as BASE_BACKUP reports it.
type Tablespace struct {
	OID      uint32 `json:"oid"`
	Location string `json:"location"`
	Size     int64  `json:"size"` // estimate in bytes (PROGRESS)
}

// protocolHandler receives the stream as it arrives.
type protocolHandler struct {
	started func(start pglogrepl.LSN, tli uint32, tablespaces []Tablespace, totalSize int64) error
	archive func(name, tablespacePath string) error
	// data reads the next n bytes of the current archive (or manifest)
	// from r: all of them, or it returns an error.
	data     func(r io.Reader, n int) error
	manifest func() error
	progress func(done int64)
	notice   func(n *pgconn.Notice)
}

// protocolResult is what the server says at the end.
type protocolResult struct {
	StopLSN          pglogrepl.LSN
	StopTimeline     uint32
	ChecksumFailures bool // the server ended with "checksum verification failure"
}

// runBaseBackup sends BASE_BACKUP on a replication connection and feeds the
// stream to h until the server reports the stop position. The exchange is
// read straight from the socket (see wire), up to ReadyForQuery, after
// which the server sends nothing: the connection is idle again for pgx
// when it returns without error.
func runBaseBackup(ctx context.Context, conn *pgconn.PgConn, o protocolOptions, h protocolHandler) (protocolResult, error) {
	if err := conn.SyncConn(ctx); err != nil {
		return protocolResult{}, fmt.Errorf("BASE_BACKUP: %w", err)
	}
	nc := conn.Conn()
	// Reads of the socket return when ctx ends: the deadline passes. The
	// connection is then unusable, as it is when pgx is interrupted.
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	query, err := (&pgproto3.Query{String: o.sql()}).Encode(nil)
	if err != nil {
		return protocolResult{}, err
	}
	if _, err := nc.Write(query); err != nil {
		return protocolResult{}, fmt.Errorf("send BASE_BACKUP: %w", contextError(ctx, err))
	}
	res, err := readBaseBackup(newWire(nc), h)
	return res, contextError(ctx, err)
}

// contextError names the cancellation instead of the deadline it caused.
func contextError(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", context.Cause(ctx), err)
	}
	return err
}

// readBaseBackup reads the server's side of a BASE_BACKUP exchange up to
// ReadyForQuery.
func readBaseBackup(w *wire, h protocolHandler) (protocolResult, error) {
	var res protocolResult
	rows, err := readResultSet(w, h.notice)
	if err != nil {
		return res, fmt.Errorf("BASE_BACKUP start: %w", err)
	}
	start, tli, err := parsePosition(rows)
	if err != nil {
		return res, fmt.Errorf("BASE_BACKUP start position: %w", err)
	}
	rows, err = readResultSet(w, h.notice)
	if err != nil {
		return res, fmt.Errorf("BASE_BACKUP tablespaces: %w", err)
	}
	var tablespaces []Tablespace
	var total int64
	for _, row := range rows {
		if len(row) != 3 {
			return res, fmt.Errorf("BASE_BACKUP tablespace row has %d columns, want 3", len(row))
		}
		var ts Tablespace
		if row[0] != nil {
			oid, err := strconv.ParseUint(string(row[0]), 10, 32)
			if err != nil {
				return res, fmt.Errorf("BASE_BACKUP tablespace oid %q: %w", row[0], err)
			}
			ts.OID, ts.Location = uint32(oid), string(row[1])
		}
		if row[2] != nil {
			kb, err := strconv.ParseInt(string(row[2]), 10, 64)
			if err != nil {
				return res, fmt.Errorf("BASE_BACKUP tablespace size %q: %w", row[2], err)
			}
			ts.Size = kb * 1024
			total += ts.Size
		}
		if ts.OID != 0 {
			tablespaces = append(tablespaces, ts)
		}
	}
	if err := h.started(start, tli, tablespaces, total); err != nil {
		return res, err
	}
	if err := readCopy(w, h); err != nil {
		return res, err
	}
	rows, err = readResultSet(w, h.notice)
	if err != nil {
		return res, fmt.Errorf("BASE_BACKUP stop: %w", err)
	}
	if res.StopLSN, res.StopTimeline, err = parsePosition(rows); err != nil {
		return res, fmt.Errorf("BASE_BACKUP stop position: %w", err)
	}
	// The command then completes, or, when pages failed checksum
	// verification, ends with an error after all data was sent.
	for {
		msg, err := w.next()
		if err != nil {
			return res, fmt.Errorf("finish base backup: %w", unexpectedEOF(err))
		}
		switch m := msg.(type) {
		case *pgproto3.CommandComplete, *pgproto3.ParameterStatus:
		case *pgproto3.ReadyForQuery:
			return res, nil
		case *pgproto3.NoticeResponse:
			h.notice((*pgconn.Notice)(pgconn.ErrorResponseToPgError((*pgproto3.ErrorResponse)(m))))
		case *pgproto3.ErrorResponse:
			pgErr := pgconn.ErrorResponseToPgError(m)
			if pgErr.Code == "XX001" { // data_corrupted: checksum verification failure
				res.ChecksumFailures = true
				continue
			}
			return res, pgErr
		default:
			return res, fmt.Errorf("finish base backup: unexpected %T", msg)
		}
	}
}

// readCopy reads the COPY stream of archives, manifest and progress
// reports up to CopyDone. Archive data goes from the read buffer to h.data
// without being copied into a message first.
func readCopy(w *wire, h protocolHandler) error {
	inCopy := false
	for {
		typ, n, err := w.header()
		if err != nil {
			return fmt.Errorf("receive base backup: %w", unexpectedEOF(err))
		}
		if typ == 'd' && n > 0 {
			if !inCopy {
				return errors.New("base backup: data before the COPY started")
			}
			kind, err := w.br.ReadByte()
			if err != nil {
				return fmt.Errorf("receive base backup: %w", unexpectedEOF(err))
			}
			if kind == copyData {
				if err := h.data(w.br, n-1); err != nil {
					return err
				}
				continue
			}
			body, err := w.body(n - 1)
			if err != nil {
				return fmt.Errorf("receive base backup: %w", err)
			}
			ev, err := ParseCopyData(append([]byte{kind}, body...))
			if err != nil {
				return err
			}
			switch ev.Kind {
			case copyNewArchive:
				err = h.archive(ev.ArchiveName, ev.TablespacePath)
			case copyManifest:
				err = h.manifest()
			case copyProgress:
				h.progress(ev.Progress)
			}
			if err != nil {
				return err
			}
			continue
		}
		body, err := w.body(n)
		if err != nil {
			return fmt.Errorf("receive base backup: %w", err)
		}
		msg, err := decodeMessage(typ, body)
		if err != nil {
			return fmt.Errorf("receive base backup: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyOutResponse:
			inCopy = true
		case *pgproto3.CopyData: // empty
			return fmt.Errorf("%w: empty", ErrBadCopyData)
		case *pgproto3.CopyDone:
			return nil
		case *pgproto3.ParameterStatus:
		case *pgproto3.NoticeResponse:
			h.notice((*pgconn.Notice)(pgconn.ErrorResponseToPgError((*pgproto3.ErrorResponse)(m))))
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(m)
		default:
			return fmt.Errorf("base backup: unexpected %T in the COPY stream", msg)
		}
	}
}

// readResultSet reads one result set (RowDescription, DataRows,
// CommandComplete) and returns its rows.
func readResultSet(w *wire, notice func(*pgconn.Notice)) ([][][]byte, error) {
	var rows [][][]byte
	for {
		msg, err := w.next()
		if err != nil {
			return nil, unexpectedEOF(err)
		}
		switch m := msg.(type) {
		case *pgproto3.RowDescription, *pgproto3.ParameterStatus:
		case *pgproto3.DataRow:
			row := make([][]byte, len(m.Values))
			for i, v := range m.Values {
				if v != nil {
					row[i] = bytes.Clone(v)
				}
			}
			rows = append(rows, row)
		case *pgproto3.CommandComplete:
			return rows, nil
		case *pgproto3.NoticeResponse:
			notice((*pgconn.Notice)(pgconn.ErrorResponseToPgError((*pgproto3.ErrorResponse)(m))))
		case *pgproto3.ErrorResponse:
			return nil, pgconn.ErrorResponseToPgError(m)
		default:
			return nil, fmt.Errorf("unexpected %T", msg)
		}
	}
}

// parsePosition decodes a (recptr, tli) row.
func parsePosition(rows [][][]byte) (pglogrepl.LSN, uint32, error) {
	if len(rows) != 1 || len(rows[0]) != 2 {
		return 0, 0, fmt.Errorf("want one row of two columns, got %d rows", len(rows))
	}
	lsn, err := pglogrepl.ParseLSN(string(rows[0][0]))
	if err != nil {
		return 0, 0, err
	}
	tli, err := strconv.ParseUint(string(rows[0][1]), 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("timeline %q: %w", rows[0][1], err)
	}
	return lsn, uint32(tli), nil
}

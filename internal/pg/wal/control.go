package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// ControlFilePath is pg_control's path in a data directory.
const ControlFilePath = "global/pg_control"

// DBState is the cluster state in pg_control (DBState in pg_control.h).
type DBState uint32

// The states, in pg_control.h's order.
const (
	DBStartup DBState = iota
	DBShutdowned
	DBShutdownedInRecovery
	DBShutdowning
	DBInCrashRecovery
	DBInArchiveRecovery
	DBInProduction
)

func (s DBState) String() string {
	names := []string{"starting up", "shut down", "shut down in recovery", "shutting down",
		"in crash recovery", "in archive recovery", "in production"}
	if int(s) < len(names) {
		return names[s]
	}
	return fmt.Sprintf("unknown state %d", uint32(s))
}

// ErrControlFile means bytes are not a pg_control this package can read.
var ErrControlFile = errors.New("not a valid pg_control")

// controlStateAt is the offset of the state field: after the system
// identifier (uint64), pg_control_version and catalog_version_no (uint32
// each). It has been there since PostgreSQL 8.
const controlStateAt = 16

// ControlFile is global/pg_control as PostgreSQL wrote it, in the
// machine's byte order.
type ControlFile struct {
	raw   []byte
	crcAt int // offset of the CRC-32C, which covers every byte before it
}

// ParseControlFile checks b (the whole pg_control file) and its CRC. The
// layout after the state field changes between major versions, so the
// CRC's place is found rather than assumed: it is the first 4-byte
// aligned offset whose preceding bytes have it as their CRC-32C (a false
// match has odds of about 2^-32 per offset tried).
func ParseControlFile(b []byte) (*ControlFile, error) {
	const maxStruct = 1024 // ControlFileData is under 300 bytes in PostgreSQL 9.6-18
	if len(b) < controlStateAt+8 {
		return nil, fmt.Errorf("%w: %d bytes", ErrControlFile, len(b))
	}
	if v := binary.NativeEndian.Uint32(b[8:]); v == 0 || v%65536 == 0 {
		// PostgreSQL's own test for a file written in the other byte order.
		return nil, fmt.Errorf("%w: pg_control_version %d (written in another byte order?)", ErrControlFile, v)
	}
	tab := crc32.MakeTable(crc32.Castagnoli)
	crc := crc32.Update(0, tab, b[:controlStateAt+4])
	for at := controlStateAt + 4; at+4 <= len(b) && at <= maxStruct; at += 4 {
		if binary.NativeEndian.Uint32(b[at:]) == crc {
			return &ControlFile{raw: b, crcAt: at}, nil
		}
		crc = crc32.Update(crc, tab, b[at:at+4])
	}
	return nil, fmt.Errorf("%w: no CRC-32C matches", ErrControlFile)
}

// SystemID is the cluster's system identifier.
func (c *ControlFile) SystemID() uint64 { return binary.NativeEndian.Uint64(c.raw) }

// Version is pg_control_version (1300 for PostgreSQL 13 to 16).
func (c *ControlFile) Version() uint32 { return binary.NativeEndian.Uint32(c.raw[8:]) }

// State is the cluster state.
func (c *ControlFile) State() DBState {
	return DBState(binary.NativeEndian.Uint32(c.raw[controlStateAt:]))
}

// WithState returns a copy of the file with the state set to s and the
// CRC computed again; the rest of the file is unchanged.
func (c *ControlFile) WithState(s DBState) []byte {
	out := append([]byte(nil), c.raw...)
	binary.NativeEndian.PutUint32(out[controlStateAt:], uint32(s))
	binary.NativeEndian.PutUint32(out[c.crcAt:], crc32.Checksum(out[:c.crcAt], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

// SkipsStartupSync reports whether PostgreSQL, starting on a data
// directory with this pg_control, goes straight to recovery instead of
// first fsyncing every file of the data directory: it does so only after
// a clean shutdown (states shut down and shut down in recovery).
func (c *ControlFile) SkipsStartupSync() bool {
	s := c.State()
	return s == DBShutdowned || s == DBShutdownedInRecovery
}

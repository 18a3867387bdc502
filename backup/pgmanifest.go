package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/jackc/pglogrepl"
)

// pgManifest writes a backup_manifest in PostgreSQL's format (version 1,
// as PostgreSQL 15 writes it, CRC32C file checksums) for a backup pgvault
// read from the disk itself, so that pg_verifybackup checks a restore of
// it as it checks one of a streamed backup. PatchManifest edits what it
// writes.
type pgManifest struct {
	buf   bytes.Buffer
	files int
}

func newPGManifest() *pgManifest {
	m := &pgManifest{}
	m.buf.WriteString("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [")
	return m
}

// add records one file: its path in the data directory, size,
// modification time and CRC32C.
func (m *pgManifest) add(p string, size int64, mtime time.Time, crc uint32) {
	if m.files > 0 {
		m.buf.WriteString(",\n")
	} else {
		m.buf.WriteString("\n")
	}
	m.files++
	if utf8.ValidString(p) {
		m.buf.WriteString(`{ "Path": `)
		m.buf.Write(jsonString(p))
	} else {
		m.buf.WriteString(`{ "Encoded-Path": "` + hex.EncodeToString([]byte(p)) + `"`)
	}
	var sum [4]byte
	binary.LittleEndian.PutUint32(sum[:], crc) // PostgreSQL writes the CRC's bytes as they sit in memory
	fmt.Fprintf(&m.buf, `, "Size": %d, "Last-Modified": "%s", "Checksum-Algorithm": "CRC32C", "Checksum": "%s" }`,
		size, mtime.UTC().Format("2006-01-02 15:04:05 GMT"), hex.EncodeToString(sum[:]))
}

// finish adds the WAL range the backup needs and the manifest's own
// checksum (SHA-256 of everything before it), and returns the manifest.
func (m *pgManifest) finish(tli uint32, start, stop pglogrepl.LSN) []byte {
	fmt.Fprintf(&m.buf, "\n],\n\"WAL-Ranges\": [\n{ \"Timeline\": %d, \"Start-LSN\": \"%s\", \"End-LSN\": \"%s\" }\n],\n", tli, start, stop)
	sum := sha256.Sum256(m.buf.Bytes())
	m.buf.WriteString(`"Manifest-Checksum": "` + hex.EncodeToString(sum[:]) + "\"}\n")
	return m.buf.Bytes()
}

// jsonString quotes s as JSON without the HTML escapes encoding/json adds
// by default.
func jsonString(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s) // a valid UTF-8 string always encodes
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

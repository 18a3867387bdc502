package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"

	"github.com/pgvault/pgvault/fs/inode"
)

// The overlay journal is an append-only log of every change an instant
// mount makes to its namespace and block maps. See
// docs/explanation/mount.md for the format and the crash-consistency
// argument; in short:
//
//	file    = magic "PGVJRNL\x01" | frame*
//	frame   = length u32 LE | CRC-32C(payload) u32 LE | payload
//	payload = kind u8 | fields of that kind (uvarints, length-prefixed strings)
//
// A frame is written with one write(2), so a kill -9 of the mount process
// leaves whole frames (the page cache keeps them); a torn or corrupt frame
// can only be the last one written before a power loss and ends the log.

// journalMagic starts every journal file; its last byte is the version.
const journalMagic = "PGVJRNL\x01"

// Limits a decoder enforces, so that corrupt bytes cannot make it allocate
// without bound.
const (
	maxFrame   = 16 << 20
	maxNameLen = 4096
	maxPathLen = 64 << 10
)

// ErrJournalCorrupt is matched by errors about undecodable journal bytes.
var ErrJournalCorrupt = errors.New("overlay journal is corrupt")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recKind is a journal record's type.
type recKind uint8

const (
	recCreate  recKind = 1 // a node created in a directory
	recRemove  recKind = 2 // unlink or rmdir of a directory entry
	recRename  recKind = 3 // rename (flags: RENAME_NOREPLACE, RENAME_EXCHANGE)
	recSetattr recKind = 4 // mode, owner, size, mtime changes (Valid says which)
	recData    recKind = 5 // a file's block map, size and mtime as of an fsync
	recClone   recKind = 6 // a created file's content is now a WAL segment of the repository (CloneWAL)
)

// Setattr record Valid bits.
const (
	attrMode  = 1 << 0
	attrUID   = 1 << 1
	attrGID   = 1 << 2
	attrSize  = 1 << 3
	attrMTime = 1 << 4
)

// Data record Flags bits.
const (
	dataLocal    = 1 << 0 // the upper file holds all of the content
	dataAbsolute = 1 << 1 // Ranges replace the block map (compaction) instead of adding to it
)

// nodeRef names a node in a record: by inode number, plus, for a node of
// the base snapshot, its path there (so replay can find it in the
// snapshot before anything else has loaded it).
type nodeRef struct {
	Ino  uint64
	Base bool
	Path string // base path; "" is the root
}

// record is one decoded journal entry. Which fields are used depends on
// Kind.
type record struct {
	Kind      recKind
	Node      nodeRef // create (Ino only), setattr, data
	Parent    nodeRef // create, remove, rename (from)
	Name      string  // create, remove, rename (from)
	NewParent nodeRef // rename (to)
	NewName   string  // rename (to)
	Type      Kind
	Flags     uint32
	Valid     uint32
	Mode      uint32
	UID, GID  uint32
	MTime     int64 // Unix nanoseconds
	Size      int64
	BaseLimit int64
	Target    string
	Ranges    []blockRange
	Timeline  uint32 // clone: the WAL file's timeline; Name is its catalogue name
}

// encodeRecord returns the payload of a record.
func encodeRecord(r *record) []byte {
	b := []byte{byte(r.Kind)}
	switch r.Kind {
	case recCreate:
		b = appendRef(b, r.Parent)
		b = appendString(b, r.Name)
		b = binary.AppendUvarint(b, r.Node.Ino)
		b = append(b, byte(r.Type))
		b = binary.AppendUvarint(b, uint64(r.Mode))
		b = binary.AppendUvarint(b, uint64(r.UID))
		b = binary.AppendUvarint(b, uint64(r.GID))
		b = binary.AppendVarint(b, r.MTime)
		b = appendString(b, r.Target)
	case recRemove:
		b = appendRef(b, r.Parent)
		b = appendString(b, r.Name)
	case recRename:
		b = appendRef(b, r.Parent)
		b = appendString(b, r.Name)
		b = appendRef(b, r.NewParent)
		b = appendString(b, r.NewName)
		b = binary.AppendUvarint(b, uint64(r.Flags))
	case recSetattr:
		b = appendRef(b, r.Node)
		b = binary.AppendUvarint(b, uint64(r.Valid))
		b = binary.AppendUvarint(b, uint64(r.Mode))
		b = binary.AppendUvarint(b, uint64(r.UID))
		b = binary.AppendUvarint(b, uint64(r.GID))
		b = binary.AppendVarint(b, r.Size)
		b = binary.AppendVarint(b, r.MTime)
	case recClone:
		b = appendRef(b, r.Node)
		b = binary.AppendUvarint(b, uint64(r.Timeline))
		b = appendString(b, r.Name)
		b = binary.AppendVarint(b, r.Size)
		b = binary.AppendVarint(b, r.MTime)
	case recData:
		b = appendRef(b, r.Node)
		b = binary.AppendUvarint(b, uint64(r.Flags))
		b = binary.AppendVarint(b, r.Size)
		b = binary.AppendVarint(b, r.BaseLimit)
		b = binary.AppendVarint(b, r.MTime)
		b = binary.AppendUvarint(b, uint64(len(r.Ranges)))
		var prev uint64
		for _, rg := range r.Ranges {
			// Ranges are sorted: store the gap from the previous end.
			b = binary.AppendUvarint(b, rg.First-prev)
			b = binary.AppendUvarint(b, rg.Count)
			prev = rg.First + rg.Count
		}
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendRef(b []byte, r nodeRef) []byte {
	b = binary.AppendUvarint(b, r.Ino)
	if !r.Base {
		return append(b, 0)
	}
	b = append(b, 1)
	return appendString(b, r.Path)
}

// decoder reads the fields of one payload; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrJournalCorrupt, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad unsigned number")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad signed number")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) u32() uint32 {
	v := d.uvarint()
	if v > 1<<32-1 {
		d.fail("number %d out of range", v)
	}
	return uint32(v)
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("record ends early")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) string(limit int) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(limit) || n > uint64(len(d.b)) {
		d.fail("string of %d bytes", n)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) name() string {
	s := d.string(maxNameLen)
	if d.err == nil && (s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\x00")) {
		d.fail("invalid entry name %q", s)
	}
	return s
}

func (d *decoder) ref() nodeRef {
	r := nodeRef{Ino: d.uvarint()}
	switch d.byte() {
	case 0:
	case 1:
		r.Base = true
		r.Path = d.string(maxPathLen)
	default:
		d.fail("bad node reference")
	}
	if d.err == nil && r.Ino == 0 {
		d.fail("inode number 0")
	}
	return r
}

// decodeRecord parses one payload.
func decodeRecord(payload []byte) (record, error) {
	d := &decoder{b: payload}
	r := record{Kind: recKind(d.byte())}
	switch r.Kind {
	case recCreate:
		r.Parent = d.ref()
		r.Name = d.name()
		r.Node = nodeRef{Ino: d.uvarint()}
		r.Type = Kind(d.byte())
		r.Mode = d.u32()
		r.UID = d.u32()
		r.GID = d.u32()
		r.MTime = d.varint()
		r.Target = d.string(maxPathLen)
		if d.err == nil && (r.Type < KindFile || r.Type > KindSymlink) {
			d.fail("unknown node type %d", r.Type)
		}
		if d.err == nil && r.Node.Ino < inode.OverlayBase {
			d.fail("created node has inode number %d outside the overlay range", r.Node.Ino)
		}
	case recRemove:
		r.Parent = d.ref()
		r.Name = d.name()
	case recRename:
		r.Parent = d.ref()
		r.Name = d.name()
		r.NewParent = d.ref()
		r.NewName = d.name()
		r.Flags = d.u32()
	case recSetattr:
		r.Node = d.ref()
		r.Valid = d.u32()
		r.Mode = d.u32()
		r.UID = d.u32()
		r.GID = d.u32()
		r.Size = d.varint()
		r.MTime = d.varint()
		if d.err == nil && r.Size < 0 {
			d.fail("negative size")
		}
	case recClone:
		r.Node = d.ref()
		r.Timeline = d.u32()
		r.Name = d.name()
		r.Size = d.varint()
		r.MTime = d.varint()
		if d.err == nil && (r.Size < 0 || r.Size > 1<<40) {
			d.fail("clone of %d bytes", r.Size)
		}
		if d.err == nil && r.Node.Base {
			d.fail("clone into a file of the snapshot")
		}
	case recData:
		r.Node = d.ref()
		r.Flags = d.u32()
		r.Size = d.varint()
		r.BaseLimit = d.varint()
		r.MTime = d.varint()
		n := d.uvarint()
		if d.err == nil && n > uint64(len(d.b))/2 {
			d.fail("%d ranges in %d bytes", n, len(d.b))
		}
		if d.err == nil && (r.Size < 0 || r.BaseLimit < 0 || r.BaseLimit > r.Size) {
			d.fail("size %d, base limit %d", r.Size, r.BaseLimit)
		}
		var prev uint64
		for i := uint64(0); i < n && d.err == nil; i++ {
			first := prev + d.uvarint()
			count := d.uvarint()
			if d.err == nil && (count == 0 || first < prev || first+count < first || first+count > 1<<40) {
				d.fail("bad block range %d+%d", first, count)
			}
			r.Ranges = append(r.Ranges, blockRange{First: first, Count: count})
			prev = first + count
		}
	default:
		d.fail("unknown record kind %d", r.Kind)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return record{}, d.err
	}
	return r, nil
}

// appendFrame frames a payload.
func appendFrame(dst, payload []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(payload, castagnoli))
	return append(dst, payload...)
}

// parseJournal decodes a whole journal file. It returns the records and
// the length of the intact prefix: a torn or damaged frame ends the log
// (tail reports why), a frame that is whole but does not decode is an
// error.
func parseJournal(data []byte) (recs []record, good int, tail error, err error) {
	if len(data) < len(journalMagic) || string(data[:len(journalMagic)]) != journalMagic {
		return nil, 0, nil, fmt.Errorf("%w: not a pgvault overlay journal (bad magic)", ErrJournalCorrupt)
	}
	off := len(journalMagic)
	for off < len(data) {
		if len(data)-off < 8 {
			return recs, off, fmt.Errorf("torn frame header at offset %d", off), nil
		}
		n := int(binary.LittleEndian.Uint32(data[off:]))
		sum := binary.LittleEndian.Uint32(data[off+4:])
		if n > maxFrame || n > len(data)-off-8 {
			return recs, off, fmt.Errorf("torn frame at offset %d (%d bytes announced)", off, n), nil
		}
		payload := data[off+8 : off+8+n]
		if crc32.Checksum(payload, castagnoli) != sum {
			return recs, off, fmt.Errorf("checksum mismatch at offset %d", off), nil
		}
		r, derr := decodeRecord(payload)
		if derr != nil {
			return recs, off, nil, fmt.Errorf("journal offset %d: %w", off, derr)
		}
		recs = append(recs, r)
		off += 8 + n
	}
	return recs, off, nil, nil
}

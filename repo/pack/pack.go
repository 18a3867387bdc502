// Package pack reads and writes pack files: many sealed blobs appended one
// after another, closed by a sealed header that lists them, so that an
// index can be rebuilt from the packs alone.
//
// Layout (repository format version 1):
//
//	blob 0 | blob 1 | ... | blob n-1 | sealed header | header length (u32 LE) | "PGVP"
//
// The plaintext header is a version byte, a u32 count, then per blob
// type u8 | id [32] | offset u32 | length u32 | plain length u32.
// The header is sealed with the repository codec under the label "pack".
package pack

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pgvault/pgvault/chunk"
)

// BlobType separates file data from metadata, so metadata packs stay small
// and can be read without touching data.
type BlobType uint8

const (
	DataBlob BlobType = 1 // file content chunks, WAL chunks
	MetaBlob BlobType = 2 // trees, content lists
)

func (t BlobType) String() string {
	switch t {
	case DataBlob:
		return "data"
	case MetaBlob:
		return "meta"
	}
	return fmt.Sprintf("blobtype(%d)", uint8(t))
}

// Valid reports whether t is a known blob type.
func (t BlobType) Valid() bool { return t == DataBlob || t == MetaBlob }

const (
	magic         = "PGVP"
	trailerSize   = 8
	headerVersion = 1
	entrySize     = 1 + chunk.IDSize + 4 + 4 + 4
	// MaxSize bounds a pack; offsets are u32.
	MaxSize = 1 << 30
	// TargetSize is where a writer closes a pack: large enough that object
	// stores see few objects, small enough to upload in seconds.
	TargetSize = 16 << 20
	// headerLabel binds the sealed header to its purpose.
	headerLabel = "pack"
	// maxEntries bounds what a header may claim, against hostile input.
	maxEntries = MaxSize / (chunk.NonceSize + chunk.TagSize + 1)
)

// ErrCorrupt is matched by errors about a pack whose structure is damaged.
var ErrCorrupt = errors.New("pack is corrupt")

// Blob locates one blob inside a pack.
type Blob struct {
	Type     BlobType
	ID       chunk.ID
	Offset   uint32
	Length   uint32 // sealed length
	PlainLen uint32 // plaintext length
}

// Writer assembles one pack in memory. It is not safe for concurrent use.
type Writer struct {
	buf   []byte
	blobs []Blob
}

// NewWriter returns an empty pack writer with room for sizeHint bytes.
func NewWriter(sizeHint int) *Writer { return &Writer{buf: make([]byte, 0, sizeHint)} }

// NewWriterOn returns an empty pack writer that writes into buf's array
// (a buffer of a finished pack, to spare the allocation and the page
// faults of a new one).
func NewWriterOn(buf []byte) *Writer { return &Writer{buf: buf[:0]} }

// Add appends a sealed blob.
func (w *Writer) Add(t BlobType, id chunk.ID, sealed []byte, plainLen int) {
	w.blobs = append(w.blobs, Blob{Type: t, ID: id, Offset: uint32(len(w.buf)), Length: uint32(len(sealed)), PlainLen: uint32(plainLen)})
	w.buf = append(w.buf, sealed...)
}

// Size is the number of blob bytes written so far.
func (w *Writer) Size() int { return len(w.buf) }

// Count is the number of blobs written so far.
func (w *Writer) Count() int { return len(w.blobs) }

// Finish seals the header and returns the whole pack, its ID (SHA-256 of
// the pack bytes) and the blobs it holds. The writer must not be reused.
func (w *Writer) Finish(codec *chunk.Codec) (data []byte, id chunk.ID, blobs []Blob) {
	plain := EncodeHeader(w.blobs)
	start := len(w.buf)
	w.buf = codec.SealMeta(w.buf, headerLabel, plain)
	w.buf = binary.LittleEndian.AppendUint32(w.buf, uint32(len(w.buf)-start))
	w.buf = append(w.buf, magic...)
	return w.buf, sha256.Sum256(w.buf), w.blobs
}

// EncodeHeader returns the plaintext header for blobs.
func EncodeHeader(blobs []Blob) []byte {
	out := make([]byte, 0, 5+len(blobs)*entrySize)
	out = append(out, headerVersion)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(blobs)))
	for _, b := range blobs {
		out = append(out, byte(b.Type))
		out = append(out, b.ID[:]...)
		out = binary.LittleEndian.AppendUint32(out, b.Offset)
		out = binary.LittleEndian.AppendUint32(out, b.Length)
		out = binary.LittleEndian.AppendUint32(out, b.PlainLen)
	}
	return out
}

// ParseHeader decodes a plaintext header. dataLen is the number of bytes
// before the sealed header; every blob must lie inside it, in order,
// without overlap.
func ParseHeader(plain []byte, dataLen int64) ([]Blob, error) {
	if len(plain) < 5 {
		return nil, fmt.Errorf("%w: header of %d bytes", ErrCorrupt, len(plain))
	}
	if plain[0] != headerVersion {
		return nil, fmt.Errorf("%w: header version %d, want %d", ErrCorrupt, plain[0], headerVersion)
	}
	n := binary.LittleEndian.Uint32(plain[1:])
	if n > maxEntries || int64(len(plain)-5) != int64(n)*entrySize {
		return nil, fmt.Errorf("%w: header claims %d blobs in %d bytes", ErrCorrupt, n, len(plain))
	}
	blobs := make([]Blob, n)
	var next int64
	p := plain[5:]
	for i := range blobs {
		b := &blobs[i]
		b.Type = BlobType(p[0])
		copy(b.ID[:], p[1:33])
		b.Offset = binary.LittleEndian.Uint32(p[33:])
		b.Length = binary.LittleEndian.Uint32(p[37:])
		b.PlainLen = binary.LittleEndian.Uint32(p[41:])
		p = p[entrySize:]
		if !b.Type.Valid() {
			return nil, fmt.Errorf("%w: blob %d has unknown type %d", ErrCorrupt, i, b.Type)
		}
		if int64(b.Offset) != next || b.Length == 0 || int64(b.Offset)+int64(b.Length) > dataLen || b.PlainLen > chunk.MaxBlobSize {
			return nil, fmt.Errorf("%w: blob %d (%s) at %d+%d outside the pack's %d data bytes", ErrCorrupt, i, b.ID.Short(), b.Offset, b.Length, dataLen)
		}
		next = int64(b.Offset) + int64(b.Length)
	}
	if next != dataLen {
		return nil, fmt.Errorf("%w: blobs end at %d but data is %d bytes", ErrCorrupt, next, dataLen)
	}
	return blobs, nil
}

// ParseTrailer reads the fixed trailer at the end of a pack of packSize
// bytes and returns where the sealed header starts and how long it is.
func ParseTrailer(trailer []byte, packSize int64) (headerOffset int64, headerLen int64, err error) {
	if len(trailer) != trailerSize || string(trailer[4:]) != magic {
		return 0, 0, fmt.Errorf("%w: no pack trailer", ErrCorrupt)
	}
	hl := int64(binary.LittleEndian.Uint32(trailer))
	if hl < 1 || hl > packSize-trailerSize {
		return 0, 0, fmt.Errorf("%w: header length %d in a pack of %d bytes", ErrCorrupt, hl, packSize)
	}
	return packSize - trailerSize - hl, hl, nil
}

// TrailerSize is the number of bytes ParseTrailer needs from the end.
const TrailerSize = trailerSize

// OpenHeader opens the sealed header bytes and parses them.
func OpenHeader(codec *chunk.Codec, sealed []byte, headerOffset int64) ([]Blob, error) {
	plain, err := codec.OpenMeta(headerLabel, sealed)
	if err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrCorrupt, err)
	}
	return ParseHeader(plain, headerOffset)
}

// Parse reads the blob list from a whole pack held in memory.
func Parse(codec *chunk.Codec, data []byte) ([]Blob, error) {
	if len(data) < trailerSize {
		return nil, fmt.Errorf("%w: %d bytes is too short for a pack", ErrCorrupt, len(data))
	}
	size := int64(len(data))
	off, hl, err := ParseTrailer(data[size-trailerSize:], size)
	if err != nil {
		return nil, err
	}
	return OpenHeader(codec, data[off:off+hl], off)
}

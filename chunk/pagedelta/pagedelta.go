// Package pagedelta encodes a changed chunk of a relation or WAL file as
// the 8 KiB pages in which it differs from an earlier chunk of the same
// file, and rebuilds the chunk from such a delta and that earlier chunk.
//
// PostgreSQL writes whole pages, and an OLTP workload dirties pages
// scattered over a relation: after pgbench most 128 KiB chunks differ from
// their previous version in a few of their 16 pages. Storing those pages
// instead of the whole chunk is what makes an incremental proportional to
// what PostgreSQL wrote (issue 19).
//
// The encoder never needs the earlier chunk's bytes: it is told which
// pages changed, by comparing keyed page fingerprints (Fingerprinter)
// kept from the earlier backup with those of the new chunk.
package pagedelta

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// PageSize is PostgreSQL's block size (and WAL page size) as built by
// every distribution: the unit a delta replaces.
const PageSize = 8192

// MaxChunk is the largest chunk a delta may describe: 64 MiB, the blob
// size limit, in whole pages.
const MaxChunk = 64 << 20

// IDSize is the length of the base chunk's ID in a delta.
const IDSize = 32

const (
	version    = 1
	headerSize = 1 + IDSize + 4 + 4 // version, base ID, base size, size
)

// ErrInvalid is matched by Decode's and Apply's errors for a delta that is
// not well formed or does not fit its base.
var ErrInvalid = errors.New("invalid page delta")

// Pages is how many pages a chunk of size bytes spans (the last one may be
// short).
func Pages(size int) int { return (size + PageSize - 1) / PageSize }

// Encode returns the delta that turns a chunk of baseSize bytes, named
// base, into cur, given changed[i] for every page i of cur that differs
// from the base's page i (pages of cur past the base's end are taken
// whatever changed says). It appends to dst.
func Encode(dst []byte, base [IDSize]byte, baseSize int, cur []byte, changed []bool) ([]byte, error) {
	n := Pages(len(cur))
	if len(cur) > MaxChunk || baseSize < 0 || baseSize > MaxChunk {
		return nil, fmt.Errorf("page delta: chunk of %d bytes, base of %d", len(cur), baseSize)
	}
	if len(changed) != n {
		return nil, fmt.Errorf("page delta: %d change flags for %d pages", len(changed), n)
	}
	basePages := Pages(baseSize)
	dst = append(dst, version)
	dst = append(dst, base[:]...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(baseSize))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(cur)))
	bitmap := len(dst)
	dst = append(dst, make([]byte, (n+7)/8)...)
	for i := range n {
		if !changed[i] && i < basePages && pageLen(len(cur), i) == pageLen(baseSize, i) {
			continue
		}
		dst[bitmap+i/8] |= 1 << (i % 8)
		dst = append(dst, page(cur, i)...)
	}
	return dst, nil
}

// Delta is a decoded delta.
type Delta struct {
	Base     [IDSize]byte
	BaseSize int
	Size     int
	bitmap   []byte
	pages    []byte
}

// Decode parses a delta (without its base).
func Decode(data []byte) (*Delta, error) {
	if len(data) < headerSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrInvalid, len(data))
	}
	if data[0] != version {
		return nil, fmt.Errorf("%w: version %d", ErrInvalid, data[0])
	}
	d := &Delta{}
	copy(d.Base[:], data[1:1+IDSize])
	d.BaseSize = int(binary.LittleEndian.Uint32(data[1+IDSize:]))
	d.Size = int(binary.LittleEndian.Uint32(data[1+IDSize+4:]))
	if d.Size > MaxChunk || d.BaseSize > MaxChunk {
		return nil, fmt.Errorf("%w: chunk of %d bytes, base of %d", ErrInvalid, d.Size, d.BaseSize)
	}
	n := Pages(d.Size)
	rest := data[headerSize:]
	if len(rest) < (n+7)/8 {
		return nil, fmt.Errorf("%w: bitmap cut short", ErrInvalid)
	}
	d.bitmap, d.pages = rest[:(n+7)/8], rest[(n+7)/8:]
	if n%8 != 0 && d.bitmap[len(d.bitmap)-1]>>(n%8) != 0 {
		return nil, fmt.Errorf("%w: bitmap marks pages past the chunk's end", ErrInvalid)
	}
	want := 0
	basePages := Pages(d.BaseSize)
	for i := range n {
		set := d.bitmap[i/8]&(1<<(i%8)) != 0
		if !set && (i >= basePages || pageLen(d.Size, i) != pageLen(d.BaseSize, i)) {
			return nil, fmt.Errorf("%w: page %d is not in the base but not in the delta", ErrInvalid, i)
		}
		if set {
			want += pageLen(d.Size, i)
		}
	}
	if len(d.pages) != want {
		return nil, fmt.Errorf("%w: %d bytes of pages, the bitmap says %d", ErrInvalid, len(d.pages), want)
	}
	return d, nil
}

// Changed counts the pages the delta carries.
func (d *Delta) Changed() int {
	c := 0
	for _, b := range d.bitmap {
		c += bits.OnesCount8(b)
	}
	return c
}

// Apply appends the chunk the delta describes to dst, from base (the
// chunk named d.Base, whose ID the caller has checked).
func (d *Delta) Apply(dst, base []byte) ([]byte, error) {
	if len(base) != d.BaseSize {
		return nil, fmt.Errorf("%w: base has %d bytes, the delta was made against %d", ErrInvalid, len(base), d.BaseSize)
	}
	pages := d.pages
	for i := range Pages(d.Size) {
		if d.bitmap[i/8]&(1<<(i%8)) != 0 {
			l := pageLen(d.Size, i)
			dst = append(dst, pages[:l]...)
			pages = pages[l:]
			continue
		}
		dst = append(dst, page(base, i)...)
	}
	return dst, nil
}

func pageLen(size, i int) int { return min(PageSize, size-i*PageSize) }

func page(b []byte, i int) []byte { return b[i*PageSize : i*PageSize+pageLen(len(b), i)] }

// FingerprintSize is the length of a page fingerprint.
const FingerprintSize = 16

// Fingerprint identifies a page's content under a secret key.
type Fingerprint [FingerprintSize]byte

// Fingerprinter computes keyed page fingerprints: GMAC (AES-256-GCM's
// authenticator over the page as additional data, no plaintext) under a
// key derived for this purpose, with a fixed nonce. Two different pages
// get the same fingerprint with probability below 2^-119 for a key the
// writer of the pages does not know; fingerprints are stored only
// encrypted. GMAC runs on the carry-less multiply and AES instructions,
// several times faster than the SHA-256 the chunk IDs already cost.
type Fingerprinter struct {
	aead cipher.AEAD
}

// NewFingerprinter returns a fingerprinter for a 32-byte key.
func NewFingerprinter(key []byte) (*Fingerprinter, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("page fingerprint key: %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Fingerprinter{aead: aead}, nil
}

var zeroNonce [12]byte

// Pages appends the fingerprint of every page of chunk to dst.
func (f *Fingerprinter) Pages(dst []Fingerprint, chunk []byte) []Fingerprint {
	var tag [FingerprintSize]byte
	for i := range Pages(len(chunk)) {
		f.aead.Seal(tag[:0], zeroNonce[:], nil, page(chunk, i))
		dst = append(dst, tag)
	}
	return dst
}

// Diff reports which pages of a chunk whose fingerprints are cur differ
// from those of the earlier chunk with fingerprints prev, and how many.
func Diff(prev, cur []Fingerprint) ([]bool, int) {
	changed := make([]bool, len(cur))
	n := 0
	for i := range cur {
		if i >= len(prev) || prev[i] != cur[i] {
			changed[i] = true
			n++
		}
	}
	return changed, n
}

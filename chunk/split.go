package chunk

import (
	"errors"
	"fmt"
	"io"

	"github.com/restic/chunker"
)

// PageSize is PostgreSQL's block size; fixed chunks are multiples of it so
// that an in-place page update dirties exactly one chunk.
const PageSize = 8192

// DefaultFixedSize is the fixed chunk size for relation files. 128 KiB was
// chosen by BenchmarkFixedChunkSize (dedup after scattered page updates vs
// index entries and compression ratio); see docs/benchmarks.md.
const DefaultFixedSize = 128 << 10

// Content-defined chunk boundaries for non-relation files: PostgreSQL's
// other files are small (configuration, pg_xact segments of 256 KiB, maps),
// so the bounds are far below restic's 512 KiB..8 MiB.
const (
	CDCMinSize     = 16 << 10
	CDCMaxSize     = 512 << 10
	CDCAverageBits = 16 // 64 KiB average
)

// MaxChunkSize bounds every chunk a splitter returns.
const MaxChunkSize = 1 << 20

// Pol is the CDC polynomial; each repository draws its own at init so that
// chunk boundaries do not reveal content across repositories.
type Pol = chunker.Pol

// RandomPol draws a random irreducible polynomial for a new repository.
func RandomPol() (Pol, error) { return chunker.RandomPolynomial() }

// Splitter cuts a stream into chunks. Next returns the next chunk, stored in
// buf when it fits (buf may be nil), and io.EOF after the last one. The
// returned slice is valid until the next call with the same buf.
type Splitter interface {
	Next(buf []byte) ([]byte, error)
}

// Fixed splits into chunks of exactly Size bytes; the last may be shorter.
type Fixed struct {
	r    io.Reader
	size int
	done bool
}

var _ Splitter = (*Fixed)(nil)

// NewFixed returns a fixed-size splitter. size must be a positive multiple
// of PageSize no larger than MaxChunkSize.
func NewFixed(r io.Reader, size int) (*Fixed, error) {
	if size <= 0 || size%PageSize != 0 || size > MaxChunkSize {
		return nil, fmt.Errorf("fixed chunk size %d: must be a multiple of %d up to %d", size, PageSize, MaxChunkSize)
	}
	return &Fixed{r: truncationError{r}, size: size}, nil
}

// ErrTruncated is returned by the splitters when their source reports
// io.ErrUnexpectedEOF (archive/tar does, for an archive that ends inside a
// file): the splitters themselves read io.ErrUnexpectedEOF from
// io.ReadFull as "the short last chunk", so a source's own report of
// truncation would otherwise be taken for a normal end (Fixed) or, in
// restic's chunker, make Next spin forever.
var ErrTruncated = errors.New("input ended early (unexpected EOF)")

// truncationError turns a source's io.ErrUnexpectedEOF into ErrTruncated.
type truncationError struct{ r io.Reader }

func (t truncationError) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("%w: %w", ErrTruncated, err)
		return n, noUnexpectedEOF{err}
	}
	return n, err
}

// noUnexpectedEOF hides io.ErrUnexpectedEOF from errors.Is (and ==)
// while keeping the message.
type noUnexpectedEOF struct{ err error }

func (e noUnexpectedEOF) Error() string        { return e.err.Error() }
func (e noUnexpectedEOF) Is(target error) bool { return target == ErrTruncated }

func (f *Fixed) Next(buf []byte) ([]byte, error) {
	if f.done {
		return nil, io.EOF
	}
	if cap(buf) < f.size {
		buf = make([]byte, f.size)
	}
	buf = buf[:f.size]
	n, err := io.ReadFull(f.r, buf)
	switch {
	case err == nil:
		return buf, nil
	case errors.Is(err, io.ErrUnexpectedEOF):
		f.done = true
		return buf[:n], nil
	case errors.Is(err, io.EOF):
		f.done = true
		return nil, io.EOF
	}
	return nil, err
}

// CDC splits at content-defined boundaries (Rabin fingerprints).
type CDC struct {
	c *chunker.Chunker
}

var _ Splitter = (*CDC)(nil)

// NewCDC returns a content-defined splitter with the repository's
// polynomial and the package's boundaries for small files.
func NewCDC(r io.Reader, pol Pol) *CDC {
	c := chunker.NewWithBoundaries(truncationError{r}, pol, CDCMinSize, CDCMaxSize)
	c.SetAverageBits(CDCAverageBits)
	return &CDC{c: c}
}

func (s *CDC) Next(buf []byte) ([]byte, error) {
	if cap(buf) < CDCMaxSize {
		buf = make([]byte, CDCMaxSize)
	}
	ch, err := s.c.Next(buf[:cap(buf)])
	if err != nil {
		return nil, err
	}
	return ch.Data, nil
}

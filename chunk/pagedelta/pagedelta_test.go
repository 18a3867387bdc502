package pagedelta

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

func pages(seed uint64, size int) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// mutate returns a copy of b with one byte of each listed page changed.
func mutate(b []byte, idx ...int) []byte {
	c := bytes.Clone(b)
	for _, i := range idx {
		c[i*PageSize+100%pageLen(len(c), i)] ^= 0xff
	}
	return c
}

func TestRoundTrip(t *testing.T) {
	const chunk = 16 * PageSize
	base := pages(1, chunk)
	var id [IDSize]byte
	id[0] = 7
	for _, tc := range []struct {
		name    string
		base    []byte
		cur     []byte
		carried int // pages in the delta
	}{
		{"unchanged", base, bytes.Clone(base), 0},
		{"one page", base, mutate(base, 5), 1},
		{"first and last", base, mutate(base, 0, 15), 2},
		{"every page", base, mutate(base, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), 16},
		{"grown by two pages", base[:8*PageSize], append(mutate(base[:8*PageSize], 3), pages(2, 2*PageSize)...), 3},
		{"short last page grown", base[:3*PageSize+100], append(bytes.Clone(base[:3*PageSize+100]), pages(3, 500)...), 1},
		{"short last page", base[:3*PageSize+100], mutate(base[:3*PageSize+100], 3), 1},
		{"shrunk", base, mutate(base[:4*PageSize], 1), 1},
		{"empty base", nil, pages(4, 2*PageSize), 2},
		{"empty chunk", base, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := NewFingerprinter(bytes.Repeat([]byte{9}, 32))
			if err != nil {
				t.Fatal(err)
			}
			changed, _ := Diff(f.Pages(nil, tc.base), f.Pages(nil, tc.cur))
			enc, err := Encode(nil, id, len(tc.base), tc.cur, changed)
			if err != nil {
				t.Fatal(err)
			}
			d, err := Decode(enc)
			if err != nil {
				t.Fatal(err)
			}
			if d.Base != id || d.BaseSize != len(tc.base) || d.Size != len(tc.cur) || d.Changed() != tc.carried {
				t.Fatalf("decoded base %x size %d/%d, %d pages carried; want %d", d.Base[:1], d.BaseSize, d.Size, d.Changed(), tc.carried)
			}
			got, err := d.Apply(nil, tc.base)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.cur) {
				t.Fatal("rebuilt chunk differs")
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	base := pages(1, 4*PageSize)
	var id [IDSize]byte
	good, err := Encode(nil, id, len(base), mutate(base, 2), []bool{false, false, true, false})
	if err != nil {
		t.Fatal(err)
	}
	bitmapAt := headerSize
	for _, tc := range []struct {
		name string
		edit func([]byte) []byte
	}{
		{"empty", func([]byte) []byte { return nil }},
		{"header cut", func(b []byte) []byte { return b[:headerSize-1] }},
		{"version 2", func(b []byte) []byte { b[0] = 2; return b }},
		{"page cut", func(b []byte) []byte { return b[:len(b)-1] }},
		{"extra byte", func(b []byte) []byte { return append(b, 0) }},
		{"bit past the end", func(b []byte) []byte { b[bitmapAt] |= 1 << 5; return b }},
		{"bit cleared", func(b []byte) []byte { b[bitmapAt] &^= 1 << 2; return b }},
		{"size past the limit", func(b []byte) []byte { b[1+IDSize+4+3] = 0x10; return b }},
		{"grown without the new page", func(b []byte) []byte { b[1+IDSize+4] += 0x20; b[1+IDSize+5] += 0; return b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decode(tc.edit(bytes.Clone(good))); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	d, err := Decode(good)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Apply(nil, base[:len(base)-1]); !errors.Is(err, ErrInvalid) {
		t.Fatalf("apply to a base of the wrong size: %v", err)
	}
}

func TestEncodeRefuses(t *testing.T) {
	var id [IDSize]byte
	if _, err := Encode(nil, id, PageSize, make([]byte, 2*PageSize), []bool{true}); err == nil {
		t.Fatal("encode with too few change flags")
	}
	if _, err := Encode(nil, id, -1, nil, nil); err == nil {
		t.Fatal("encode against a negative base size")
	}
}

func TestFingerprints(t *testing.T) {
	a, _ := NewFingerprinter(bytes.Repeat([]byte{1}, 32))
	b, _ := NewFingerprinter(bytes.Repeat([]byte{2}, 32))
	chunk := pages(5, 3*PageSize+10)
	fa := a.Pages(nil, chunk)
	if len(fa) != 4 {
		t.Fatalf("%d fingerprints for 4 pages", len(fa))
	}
	if fb := b.Pages(nil, chunk); fb[0] == fa[0] {
		t.Fatal("two keys give the same fingerprint")
	}
	if again := a.Pages(nil, bytes.Clone(chunk)); !slices.Equal(again, fa) {
		t.Fatal("fingerprints are not deterministic")
	}
	changed, n := Diff(fa, a.Pages(nil, mutate(chunk, 1, 3)))
	if n != 2 || !changed[1] || !changed[3] || changed[0] || changed[2] {
		t.Fatalf("diff %v, %d", changed, n)
	}
	if _, err := NewFingerprinter(make([]byte, 16)); err == nil {
		t.Fatal("a 16-byte key accepted")
	}
}

// A delta decoded from any bytes either is refused or rebuilds a chunk of
// its stated size from a base of its stated size, and encodes back to the
// same bytes (one encoding per delta).
func FuzzDecode(f *testing.F) {
	base := pages(1, 4*PageSize+300)
	var id [IDSize]byte
	for _, changed := range [][]bool{{false, false, false, false, false}, {true, false, true, false, true}} {
		enc, _ := Encode(nil, id, len(base), mutate(base, 0, 2, 4), changed)
		f.Add(enc)
	}
	grown, _ := Encode(nil, id, PageSize, pages(2, 2*PageSize), []bool{false, true})
	f.Add(grown)
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Decode(data)
		if err != nil {
			return
		}
		out, err := d.Apply(nil, make([]byte, d.BaseSize))
		if err != nil {
			t.Fatalf("apply to a base of the stated size: %v", err)
		}
		if len(out) != d.Size {
			t.Fatalf("rebuilt %d bytes, delta says %d", len(out), d.Size)
		}
		changed := make([]bool, Pages(d.Size))
		for i := range changed {
			changed[i] = d.bitmap[i/8]&(1<<(i%8)) != 0
		}
		again, err := Encode(nil, d.Base, d.BaseSize, out, changed)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("re-encoded differently (%v)", err)
		}
	})
}

func BenchmarkFingerprint(b *testing.B) {
	chunk := pages(1, 16*PageSize)
	f, _ := NewFingerprinter(make([]byte, 32))
	var dst []Fingerprint
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		dst = f.Pages(dst[:0], chunk)
	}
}

// BenchmarkChunkID is what the backup already pays per chunk (its ID),
// for comparison with BenchmarkFingerprint.
func BenchmarkChunkID(b *testing.B) {
	chunk := pages(1, 16*PageSize)
	h := hmac.New(sha256.New, make([]byte, 32))
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		h.Reset()
		h.Write(chunk)
		h.Sum(nil)
	}
}

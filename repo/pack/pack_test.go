package pack

import (
	"bytes"
	"errors"
	"testing"

	"github.com/pgvault/pgvault/chunk"
)

func testCodec(t testing.TB, encrypted bool) *chunk.Codec {
	t.Helper()
	opts := chunk.CodecOptions{Hasher: chunk.NewHasher(bytes.Repeat([]byte{1}, 32))}
	if encrypted {
		opts.EncKey = bytes.Repeat([]byte{2}, 32)
	}
	c, err := chunk.NewCodec(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func buildPack(t testing.TB, c *chunk.Codec, blobs [][]byte) ([]byte, chunk.ID, []Blob) {
	w := NewWriter(0)
	for i, b := range blobs {
		typ := DataBlob
		if i%2 == 1 {
			typ = MetaBlob
		}
		id := c.Hasher().ID(b)
		w.Add(typ, id, c.Seal(nil, id, b), len(b))
	}
	return w.Finish(c)
}

func TestRoundTrip(t *testing.T) {
	for _, enc := range []bool{true, false} {
		c := testCodec(t, enc)
		plains := [][]byte{[]byte("alpha"), bytes.Repeat([]byte("b"), 100000), {0}, []byte("delta")}
		data, _, written := buildPack(t, c, plains)
		got, err := Parse(c, data)
		if err != nil {
			t.Fatalf("enc=%v: %v", enc, err)
		}
		if len(got) != len(written) {
			t.Fatalf("got %d blobs, want %d", len(got), len(written))
		}
		for i, b := range got {
			if b != written[i] {
				t.Fatalf("blob %d = %+v, want %+v", i, b, written[i])
			}
			plain, err := c.Open(nil, b.ID, data[b.Offset:b.Offset+b.Length])
			if err != nil || !bytes.Equal(plain, plains[i]) {
				t.Fatalf("blob %d does not open: %v", i, err)
			}
		}
	}
}

func TestEmptyPack(t *testing.T) {
	c := testCodec(t, true)
	data, _, _ := NewWriter(0).Finish(c)
	blobs, err := Parse(c, data)
	if err != nil || len(blobs) != 0 {
		t.Fatalf("blobs = %v, err = %v", blobs, err)
	}
}

func TestParseDetectsDamage(t *testing.T) {
	c := testCodec(t, true)
	data, _, _ := buildPack(t, c, [][]byte{[]byte("one"), []byte("two")})
	tests := map[string][]byte{
		"empty":            nil,
		"truncated":        data[:len(data)-1],
		"no trailer magic": append(bytes.Clone(data[:len(data)-4]), "XXXX"...),
		"header flipped":   flipAt(data, len(data)-12),
		"huge header len":  append(append(bytes.Clone(data[:len(data)-8]), 0xff, 0xff, 0xff, 0x7f), "PGVP"...),
		"prefix cut":       data[3:],
	}
	for name, d := range tests {
		if _, err := Parse(c, d); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}

func TestParseHeaderChecksRanges(t *testing.T) {
	id := chunk.ID{1}
	tests := map[string]struct {
		blobs   []Blob
		dataLen int64
	}{
		"gap":         {[]Blob{{Type: DataBlob, ID: id, Offset: 5, Length: 10, PlainLen: 1}}, 15},
		"past end":    {[]Blob{{Type: DataBlob, ID: id, Offset: 0, Length: 10, PlainLen: 1}}, 5},
		"short":       {[]Blob{{Type: DataBlob, ID: id, Offset: 0, Length: 10, PlainLen: 1}}, 20},
		"zero length": {[]Blob{{Type: DataBlob, ID: id, Offset: 0, Length: 0}}, 0},
		"bad type":    {[]Blob{{Type: 9, ID: id, Offset: 0, Length: 10}}, 10},
	}
	for name, tt := range tests {
		if _, err := ParseHeader(EncodeHeader(tt.blobs), tt.dataLen); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}

func flipAt(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x10
	return c
}

func FuzzParseHeader(f *testing.F) {
	f.Add(EncodeHeader([]Blob{{Type: DataBlob, ID: chunk.ID{1}, Offset: 0, Length: 40, PlainLen: 3}}), int64(40))
	f.Add([]byte{1, 0, 0, 0, 0}, int64(0))
	f.Fuzz(func(t *testing.T, plain []byte, dataLen int64) {
		blobs, err := ParseHeader(plain, dataLen)
		if err != nil {
			return
		}
		if !bytes.Equal(EncodeHeader(blobs), plain) {
			t.Fatal("a header that parses does not re-encode to itself")
		}
	})
}

func FuzzParse(f *testing.F) {
	c := testCodec(f, false)
	data, _, _ := buildPack(f, c, [][]byte{[]byte("x"), []byte("yy")})
	f.Add(data)
	f.Add(data[len(data)-8:])
	f.Fuzz(func(t *testing.T, data []byte) {
		blobs, err := Parse(c, data)
		if err != nil {
			return
		}
		for _, b := range blobs {
			if int(b.Offset)+int(b.Length) > len(data) {
				t.Fatalf("blob outside the pack: %+v", b)
			}
		}
	})
}

func FuzzParseTrailer(f *testing.F) {
	var good [trailerSize]byte
	good[0] = 40
	copy(good[4:], magic)
	f.Add(good[:], int64(1000))
	f.Add(good[:], int64(trailerSize))
	f.Add([]byte("short"), int64(10))
	f.Fuzz(func(t *testing.T, trailer []byte, packSize int64) {
		off, hl, err := ParseTrailer(trailer, packSize)
		if err != nil {
			return
		}
		if hl < 1 || off < 0 || off+hl+trailerSize != packSize {
			t.Fatalf("header at %d+%d in a pack of %d bytes", off, hl, packSize)
		}
	})
}

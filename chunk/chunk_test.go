package chunk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestParseID(t *testing.T) {
	good := strings.Repeat("ab", 32)
	tests := []struct {
		in      string
		wantErr bool
	}{
		{good, false},
		{good[:63], true},
		{good + "a", true},
		{strings.Repeat("zz", 32), true},
		{"", true},
	}
	for _, tt := range tests {
		id, err := ParseID(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseID(%q) err = %v, wantErr %v", tt.in, err, tt.wantErr)
		}
		if err == nil && id.String() != tt.in {
			t.Errorf("round trip: got %s want %s", id, tt.in)
		}
	}
}

func TestHasherIsKeyed(t *testing.T) {
	data := []byte("the same plaintext")
	a, b := NewHasher(testKey(1)), NewHasher(testKey(2))
	if a.ID(data) == b.ID(data) {
		t.Fatal("IDs under different keys are equal: IDs are not keyed")
	}
	if a.ID(data) != a.ID(append([]byte(nil), data...)) {
		t.Fatal("ID is not deterministic")
	}
}

func collect(t *testing.T, s Splitter) []int {
	t.Helper()
	var sizes []int
	for {
		c, err := s.Next(nil)
		if err == io.EOF {
			return sizes
		}
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(c))
	}
}

func TestFixedSplitter(t *testing.T) {
	const size = 2 * PageSize
	tests := []struct {
		name  string
		input int
		want  []int
	}{
		{"empty", 0, nil},
		{"one byte", 1, []int{1}},
		{"exact", size, []int{size}},
		{"one over", size + 1, []int{size, 1}},
		{"several pages", 5 * PageSize, []int{size, size, PageSize}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// OneByteReader proves the splitter does not rely on full reads.
			s, err := NewFixed(iotest.OneByteReader(bytes.NewReader(make([]byte, tt.input))), size)
			if err != nil {
				t.Fatal(err)
			}
			if got := collect(t, s); !slices.Equal(got, tt.want) {
				t.Errorf("sizes = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFixedSplitterRejectsBadSizes(t *testing.T) {
	for _, size := range []int{0, -8192, 1000, PageSize + 1, 2 * MaxChunkSize} {
		if _, err := NewFixed(bytes.NewReader(nil), size); err == nil {
			t.Errorf("NewFixed(size %d) accepted", size)
		}
	}
}

func TestFixedSplitterPassesReadErrors(t *testing.T) {
	boom := errors.New("boom")
	s, _ := NewFixed(iotest.ErrReader(boom), PageSize)
	if _, err := s.Next(nil); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
}

// TestCDCBoundariesPinned fixes the chunk boundaries for a seeded input and
// polynomial: a change here changes every stored ID and so breaks dedup
// against existing repositories. Update only with a format version bump.
func TestCDCBoundariesPinned(t *testing.T) {
	const pol = Pol(0x3DA3358B4DC173)
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	got := collect(t, NewCDC(bytes.NewReader(data), pol))
	want := []int{}
	sum := 0
	for _, n := range got {
		sum += n
		if n > CDCMaxSize || (n < CDCMinSize && sum != len(data)) {
			t.Errorf("chunk of %d bytes outside [%d, %d]", n, CDCMinSize, CDCMaxSize)
		}
	}
	if sum != len(data) {
		t.Fatalf("chunks cover %d bytes, want %d", sum, len(data))
	}
	want = pinnedCDCSizes
	if !slices.Equal(got, want) {
		t.Errorf("CDC boundaries changed:\n got %#v\nwant %#v", got, want)
	}
}

func TestCDCSmallFileIsOneChunk(t *testing.T) {
	got := collect(t, NewCDC(bytes.NewReader(make([]byte, 100)), Pol(0x3DA3358B4DC173)))
	if !slices.Equal(got, []int{100}) {
		t.Fatalf("sizes = %v, want [100]", got)
	}
}

func newCodec(t testing.TB, encrypted bool, level int) *Codec {
	t.Helper()
	opts := CodecOptions{Hasher: NewHasher(testKey(7)), Level: level}
	if encrypted {
		opts.EncKey = testKey(9)
	}
	c, err := NewCodec(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCodecRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	random := make([]byte, 100_000)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	inputs := map[string][]byte{
		"empty":         {},
		"one byte":      {42},
		"pages":         TestPages(16, 1),
		"random":        random,
		"zeros 1MiB":    make([]byte, 1<<20),
		"short text":    []byte("hello, pgvault"),
		"random prefix": append(random[:300:300], make([]byte, 5000)...),
	}
	for _, encrypted := range []bool{true, false} {
		c := newCodec(t, encrypted, 0)
		for name, plain := range inputs {
			id := c.Hasher().ID(plain)
			sealed := c.Seal(nil, id, plain)
			if len(sealed) > len(plain)+c.Overhead() {
				t.Errorf("%s (enc=%v): sealed %d bytes > plain %d + overhead %d", name, encrypted, len(sealed), len(plain), c.Overhead())
			}
			got, err := c.Open(nil, id, sealed)
			if err != nil {
				t.Fatalf("%s (enc=%v): %v", name, encrypted, err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("%s (enc=%v): round trip mismatch", name, encrypted)
			}
			if encrypted && len(plain) > 32 && bytes.Contains(sealed, plain[:32]) {
				t.Errorf("%s: plaintext visible in sealed blob", name)
			}
		}
	}
}

func TestCodecDetectsDamage(t *testing.T) {
	for _, encrypted := range []bool{true, false} {
		c := newCodec(t, encrypted, 0)
		plain := TestPages(2, 5)
		id := c.Hasher().ID(plain)
		sealed := c.Seal(nil, id, plain)
		other := c.Hasher().ID([]byte("other"))
		cases := map[string]struct {
			id     ID
			sealed []byte
		}{
			"truncated by one": {id, sealed[:len(sealed)-1]},
			"truncated to 10":  {id, sealed[:10]},
			"empty":            {id, nil},
			"wrong ID":         {other, sealed},
			"flipped first":    {id, flip(sealed, 0)},
			"flipped middle":   {id, flip(sealed, len(sealed)/2)},
			"flipped last":     {id, flip(sealed, len(sealed)-1)},
			"appended garbage": {id, append(bytes.Clone(sealed), 1, 2, 3)},
		}
		for name, tc := range cases {
			_, err := c.Open(nil, tc.id, tc.sealed)
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s (enc=%v): err = %v, want ErrCorrupt", name, encrypted, err)
				continue
			}
			if !strings.Contains(err.Error(), tc.id.Short()) {
				t.Errorf("%s: error %q does not name blob %s", name, err, tc.id.Short())
			}
		}
	}
}

func TestCodecWrongKeyRefused(t *testing.T) {
	a := newCodec(t, true, 0)
	b, err := NewCodec(CodecOptions{Hasher: NewHasher(testKey(7)), EncKey: testKey(10)})
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("secret")
	id := a.Hasher().ID(plain)
	if _, err := b.Open(nil, id, a.Seal(nil, id, plain)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open with wrong key: err = %v", err)
	}
}

func TestMetaLabelsAreBound(t *testing.T) {
	for _, encrypted := range []bool{true, false} {
		c := newCodec(t, encrypted, 0)
		sealed := c.SealMeta(nil, "index", []byte(`{"packs":[]}`))
		if _, err := c.OpenMeta("index", sealed); err != nil {
			t.Fatalf("enc=%v: %v", encrypted, err)
		}
		if _, err := c.OpenMeta("snapshot", sealed); !errors.Is(err, ErrMetaCorrupt) {
			t.Errorf("enc=%v: opened under another label: %v", encrypted, err)
		}
		if _, err := c.OpenMeta("index", sealed[:len(sealed)-2]); !errors.Is(err, ErrMetaCorrupt) {
			t.Errorf("enc=%v: truncated object opened: %v", encrypted, err)
		}
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

func FuzzCodecOpen(f *testing.F) {
	c := newCodec(f, true, 0)
	u := newCodec(f, false, 0)
	plain := TestPages(1, 1)
	id := c.Hasher().ID(plain)
	f.Add(c.Seal(nil, id, plain), true)
	f.Add(u.Seal(nil, id, plain), false)
	f.Add([]byte{1, 0x28, 0xb5, 0x2f, 0xfd}, false)
	f.Fuzz(func(t *testing.T, sealed []byte, encrypted bool) {
		codec := u
		if encrypted {
			codec = c
		}
		got, err := codec.Open(nil, id, sealed)
		if err == nil && !bytes.Equal(got, plain) {
			t.Fatalf("Open returned wrong bytes without an error")
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error does not match ErrCorrupt: %v", err)
		}
	})
}

func FuzzParseID(f *testing.F) {
	f.Add(ID{1, 2, 3}.String())
	f.Add("zz")
	f.Add(strings.Repeat("G", 2*IDSize))
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		if !strings.EqualFold(id.String(), s) {
			t.Fatalf("ParseID(%q).String() = %q", s, id)
		}
		var back ID
		if err := back.UnmarshalText([]byte(id.String())); err != nil || back != id {
			t.Fatalf("UnmarshalText: %v", err)
		}
	})
}

// A source that reports io.ErrUnexpectedEOF (a truncated tar entry) makes
// both splitters fail with ErrTruncated: never a silent short file, never
// a spinning chunker (found by backup's FuzzReadTar).
func TestSplittersReportTruncatedSource(t *testing.T) {
	src := func() io.Reader {
		return io.MultiReader(bytes.NewReader(make([]byte, 1000)), iotest.ErrReader(io.ErrUnexpectedEOF))
	}
	fixed, _ := NewFixed(src(), DefaultFixedSize)
	cdc := NewCDC(src(), Pol(0x3DA3358B4DC173))
	for name, s := range map[string]Splitter{"fixed": fixed, "cdc": cdc} {
		var err error
		for i := 0; i < 10 && err == nil; i++ {
			_, err = s.Next(nil)
		}
		if !errors.Is(err, ErrTruncated) || errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: %v, want ErrTruncated", name, err)
		}
	}
}

// TestFastestLevelOneBlockPerChunk: at the default (fastest) level a 128
// KiB chunk is compressed as a single zstd block, not two of 64 KiB (see
// NewCodec).
func TestFastestLevelOneBlockPerChunk(t *testing.T) {
	c := newCodec(t, false, 0)
	frame := c.enc.EncodeAll(TestPages(16, 1), nil)
	if len(frame) < 6 || binary.LittleEndian.Uint32(frame) != 0xFD2FB528 {
		t.Fatalf("not a zstd frame: % x", frame[:min(len(frame), 8)])
	}
	fhd := frame[4]
	at := 5
	single := fhd&0x20 != 0
	if !single {
		at++ // window descriptor
	}
	at += []int{0, 1, 2, 4}[fhd&3] // dictionary ID
	fcs := []int{0, 2, 4, 8}[fhd>>6]
	if fcs == 0 && single {
		fcs = 1
	}
	at += fcs
	if len(frame) < at+3 {
		t.Fatalf("frame of %d bytes ends in its header", len(frame))
	}
	if last := frame[at]&1 == 1; !last {
		t.Fatal("the first block of a 128 KiB chunk is not its last: the chunk was cut into several blocks")
	}
}

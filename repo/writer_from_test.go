package repo

import (
	"bytes"
	"context"
	"io"
	"sync/atomic"
	"testing"

	"github.com/pgvault/pgvault/chunk"
)

// countingReaderAt counts the bytes read through it.
type countingReaderAt struct {
	r    io.ReaderAt
	read atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.read.Add(int64(n))
	return n, err
}

func TestAddFileFrom(t *testing.T) {
	r, _ := newTestRepo(t)
	ctx := context.Background()
	cs := int64(r.cfg.ChunkSize)
	old := chunk.TestPages(int(5*cs/8192)+3, 1) // five whole chunks and a part
	w := r.NewSnapshotWriter(ctx)
	if _, err := w.AddFile("f", NodeMeta{Mode: 0o600}, bytes.NewReader(old), SplitFixed); err != nil {
		t.Fatal(err)
	}
	base, err := w.Commit(ctx, SnapshotInfo{Kind: "test"})
	if err != nil {
		t.Fatal(err)
	}
	baseFile, err := r.OpenFile(ctx, base, "f")
	if err != nil {
		t.Fatal(err)
	}
	baseChunks, err := r.ChunkList(ctx, baseFile.Node())
	if err != nil {
		t.Fatal(err)
	}

	page := func(data []byte, no int64, b byte) {
		for i := range int64(8192) {
			data[no*8192+i] = b
		}
	}
	cases := []struct {
		name     string
		edit     func() []byte
		changed  []Range
		wantRead int64
	}{
		{"unchanged", func() []byte { return bytes.Clone(old) }, nil, 0},
		{"one page in chunk 2", func() []byte {
			d := bytes.Clone(old)
			page(d, 2*cs/8192+1, 0xAB)
			return d
		}, []Range{{2*cs + 8192, 8192}}, cs},
		{"pages in chunks 0 and 4", func() []byte {
			d := bytes.Clone(old)
			page(d, 0, 1)
			page(d, 4*cs/8192, 2)
			return d
		}, []Range{{0, 8192}, {4 * cs, 8192}}, 2 * cs},
		{"extended by two pages", func() []byte {
			return append(bytes.Clone(old), chunk.TestPages(2, 9)...)
		}, []Range{{int64(len(old)), 2 * 8192}}, int64(len(old)) - 5*cs + 2*8192},
		{"ranges out of order", func() []byte {
			d := bytes.Clone(old)
			page(d, 4*cs/8192, 2)
			page(d, 0, 1)
			return d
		}, []Range{{4 * cs, 8192}, {0, 8192}}, 2 * cs},
		{"one range across chunks 1 to 3", func() []byte {
			d := bytes.Clone(old)
			for p := cs/8192 + 3; p < 3*cs/8192+1; p++ {
				page(d, p, 3)
			}
			return d
		}, []Range{{cs + 3*8192, 2*cs - 2*8192}}, 3 * cs},
		{"a long range covering a short one", func() []byte {
			d := bytes.Clone(old)
			for p := range 3 * cs / 8192 {
				page(d, p, 4)
			}
			return d
		}, []Range{{0, 3 * cs}, {8192, 8192}}, 3 * cs},
		{"truncated to three chunks", func() []byte { return bytes.Clone(old[:3*cs]) }, nil, 0},
		{"truncated inside chunk 1", func() []byte { return bytes.Clone(old[:cs+8192]) }, nil, 8192},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := c.edit()
			src := &countingReaderAt{r: bytes.NewReader(data)}
			w := r.NewSnapshotWriter(ctx)
			if _, err := w.AddFileFrom("f", NodeMeta{Mode: 0o600}, baseChunks, c.changed, int64(len(data)), src); err != nil {
				t.Fatal(err)
			}
			s, err := w.Commit(ctx, SnapshotInfo{Kind: "test"})
			if err != nil {
				t.Fatal(err)
			}
			if got := src.read.Load(); got != c.wantRead {
				t.Errorf("read %d bytes, want %d", got, c.wantRead)
			}
			f, err := r.OpenFile(ctx, s, "f")
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(io.NewSectionReader(f, 0, f.Node().Size))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("stored content differs from the file (%d vs %d bytes)", len(got), len(data))
			}
			// The same content stored the ordinary way has the same chunks.
			w2 := r.NewSnapshotWriter(ctx)
			w2.AddFile("f", NodeMeta{Mode: 0o600}, bytes.NewReader(data), SplitFixed)
			s2, err := w2.Commit(ctx, SnapshotInfo{Kind: "test"})
			if err != nil {
				t.Fatal(err)
			}
			if s2.Root != s.Root {
				t.Error("AddFileFrom's tree differs from AddFile's for the same bytes")
			}
		})
	}
}

// A range left out of changed keeps the old bytes: the caller's promise.
// A base split another way is read whole.
func TestAddFileFromNonFixedBase(t *testing.T) {
	r, _ := newTestRepo(t)
	ctx := context.Background()
	data := chunk.TestPages(40, 3)
	base := []ChunkRef{{Size: 1000}, {Size: uint32(len(data) - 1000)}} // not at multiples of the chunk size
	src := &countingReaderAt{r: bytes.NewReader(data)}
	w := r.NewSnapshotWriter(ctx)
	if _, err := w.AddFileFrom("f", NodeMeta{}, base, nil, int64(len(data)), src); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx, SnapshotInfo{Kind: "test"}); err != nil {
		t.Fatal(err)
	}
	if src.read.Load() != int64(len(data)) {
		t.Fatalf("read %d of %d bytes", src.read.Load(), len(data))
	}
}

func TestRangeCursor(t *testing.T) {
	ranges := []Range{{100, 50}, {0, 1000}, {2000, 10}, {2005, 1}}
	c := newRangeCursor(ranges)
	for _, q := range []struct {
		off, end int64
		want     bool
	}{
		{0, 10, true},
		{990, 1000, true}, // only the long range, sorted first, reaches here
		{1000, 2000, false},
		{2000, 2001, true},
		{2010, 3000, false},
		{3000, 4000, false},
	} {
		if got := c.touches(q.off, q.end); got != q.want {
			t.Errorf("touches(%d, %d) = %v, want %v", q.off, q.end, got, q.want)
		}
	}
}

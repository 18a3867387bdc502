package backup

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
)

func TestAheadReader(t *testing.T) {
	data := make([]byte, 3*directRead+12345)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		read func(io.Reader) ([]byte, error)
	}{
		{"whole", io.ReadAll},
		{"one byte at a time", func(r io.Reader) ([]byte, error) { return io.ReadAll(iotest.OneByteReader(r)) }},
		{"odd sizes", func(r io.Reader) ([]byte, error) {
			var out bytes.Buffer
			_, err := io.CopyBuffer(&out, struct{ io.Reader }{r}, make([]byte, 100003))
			return out.Bytes(), err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			a := newAheadReader(f, make([]byte, directAhead*directRead), directRead)
			got, err := tt.read(a)
			a.close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes (%v), want the file's %d", len(got), err, len(data))
			}
		})
	}
	// Closing before the end stops the goroutine, which may be blocked
	// handing over a full buffer.
	f, _ := os.Open(p)
	defer f.Close()
	a := newAheadReader(f, make([]byte, 2*directRead), directRead)
	if _, err := a.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	a.close()
}

// TestLocalOpenDirect: large files open with O_DIRECT where the file
// system takes it, and read back whole either way.
func TestLocalOpenDirect(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("0123456789abcdef"), (directMin+5000)/16)
	big, small := filepath.Join(dir, "big"), filepath.Join(dir, "small")
	os.WriteFile(big, data, 0o600)
	os.WriteFile(small, data[:100], 0o600)
	lc := &localCopy{in: &ingest{}}
	defer lc.close()
	for _, p := range []string{big, small} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		f, direct, err := lc.open(localEntry{src: p, info: fi})
		if err != nil {
			t.Fatal(err)
		}
		r := &localReader{lc: lc, f: f, src: f, name: p, left: fi.Size()}
		if direct {
			r.ahead = newAheadReader(f, lc.direct, directRead)
			r.src = r.ahead
		}
		got, err := io.ReadAll(r)
		r.close()
		if err != nil || !bytes.Equal(got, data[:fi.Size()]) {
			t.Fatalf("%s (direct %v): read %d bytes, %v", p, direct, len(got), err)
		}
		if p == small && direct {
			t.Errorf("a %d-byte file was opened with O_DIRECT", fi.Size())
		}
		t.Logf("%s: %d bytes, O_DIRECT %v", filepath.Base(p), fi.Size(), direct)
	}
}

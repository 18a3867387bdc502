package backup

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestEarlyWriteback writes files through earlyWriteback in pieces of
// several sizes: the content must be exactly what was written, and
// writeback must have been started for all but the last partial stretch.
func TestEarlyWriteback(t *testing.T) {
	for _, tc := range []struct {
		name  string
		piece int
		total int
	}{
		{"small file", 100, 300},
		{"chunks", 128 << 10, 3*writebackEvery + 5000},
		{"odd pieces", 77777, writebackEvery + 1},
		{"one big write", 2*writebackEvery + 3, 2*writebackEvery + 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := make([]byte, tc.total)
			for i := range want {
				want[i] = byte(i * 7)
			}
			p := filepath.Join(t.TempDir(), "f")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			w := &earlyWriteback{f: f}
			for rest := want; len(rest) > 0; {
				n := min(tc.piece, len(rest))
				if m, err := w.Write(rest[:n]); err != nil || m != n {
					t.Fatalf("Write: %d, %v", m, err)
				}
				rest = rest[n:]
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if w.off != int64(tc.total) || w.off-w.started >= writebackEvery {
				t.Errorf("wrote %d, writeback started for %d: want all but less than %d", w.off, w.started, writebackEvery)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("file content differs from what was written (%d vs %d bytes)", len(got), len(want))
			}
		})
	}
}

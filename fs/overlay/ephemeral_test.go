package overlay

import (
	"bytes"
	"context"
	"testing"

	"github.com/pgvault/pgvault/fs/fstest"
)

// An ephemeral overlay asks the disk for no flush at all, not on fsync and
// not on Close, and still reads back and reports what was written; a
// durable one flushes on both.
func TestEphemeralOverlayFlushesNothing(t *testing.T) {
	tree := fstest.SampleTree()
	const rel = "base/1/16384"
	for _, tt := range []struct {
		ephemeral      bool
		flushesAtFsync bool
	}{
		{ephemeral: true},
		{ephemeral: false, flushesAtFsync: true},
	} {
		name := "durable"
		if tt.ephemeral {
			name = "ephemeral"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			r, s := fstest.Snapshot(t, tree)
			ov := openTestOverlayWith(t, r, s, Options{Scratch: t.TempDir(), Ephemeral: tt.ephemeral})
			n := mustNode(t, ov, rel)
			data := bytes.Repeat([]byte{0x5A}, DefaultBlockSize)
			if _, err := ov.Write(ctx, n, data, DefaultBlockSize); err != nil {
				t.Fatal(err)
			}
			if err := ov.Fsync(ctx, n); err != nil {
				t.Fatal(err)
			}
			if got := ov.Stats().DiskFlushes > 0; got != tt.flushesAtFsync {
				t.Fatalf("disk flushes after fsync: %d", ov.Stats().DiskFlushes)
			}
			if got := mustRead(t, ov, rel)[DefaultBlockSize : 2*DefaultBlockSize]; !bytes.Equal(got, data) {
				t.Fatal("the written block does not read back")
			}
			changes, err := ov.Changes(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(changes) != 1 || changes[0].Path != rel || len(changes[0].Changed) != 1 || changes[0].Changed[0] != (Range{DefaultBlockSize, DefaultBlockSize}) {
				t.Fatalf("changes: %+v", changes)
			}
			before := ov.Stats().DiskFlushes
			if err := ov.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if got := ov.Stats().DiskFlushes > before; got == tt.ephemeral {
				t.Fatalf("disk flushes %d before Close, %d after", before, ov.Stats().DiskFlushes)
			}
		})
	}
}

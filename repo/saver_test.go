package repo

import (
	"context"
	"crypto/rand"
	"sync"
	"testing"

	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/mem"
	"github.com/pgvault/pgvault/repo/pack"
)

// heldUploads holds every pack upload until the gate opens.
type heldUploads struct {
	backend.Backend
	gate chan struct{}
}

func (b *heldUploads) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if h.Type == backend.PackFile {
		<-b.gate
	}
	return b.Backend.Save(ctx, h, data)
}

// A pack that a cancelled save could not hand to the uploads holds blobs
// that earlier saves already reported as stored-at-the-next-flush: it must
// fail every later flush, never let one report them durable.
func TestDroppedPackFailsLaterFlush(t *testing.T) {
	be := &heldUploads{Backend: mem.New(), gate: make(chan struct{})}
	r := newTestRepoOn(t, be, Options{PackSize: 64 << 10, Uploaders: 1})
	release := sync.OnceFunc(func() { close(be.gate) })
	defer release()
	blob := func(size int) []byte {
		b := make([]byte, size) // incompressible: the pack fills as counted
		rand.Read(b)
		return b
	}
	var kept [][]byte
	// Fill the upload worker (blocked on the gate) and the queue's slot.
	for len(kept) < 4 || len(r.getSaver().uploads) < cap(r.getSaver().uploads) {
		data := blob(48 << 10)
		if _, _, err := r.SaveBlob(ctx, pack.DataBlob, data); err != nil {
			t.Fatal(err)
		}
		kept = append(kept, data)
	}
	// A blob saved into the open pack, then a cancelled save that fills it.
	if _, _, err := r.SaveBlob(ctx, pack.DataBlob, blob(8<<10)); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := r.SaveBlob(cancelled, pack.DataBlob, blob(60<<10)); err == nil {
		t.Fatal("a save whose full pack could not be queued succeeded")
	}
	release()
	if err := r.Flush(ctx); err == nil {
		t.Fatal("flush succeeded although a pack of saved blobs was dropped")
	}
}

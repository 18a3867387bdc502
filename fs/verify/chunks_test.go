package verify

import (
	"bytes"
	"context"
	"math/rand"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/mem"
	"github.com/pgvault/pgvault/repo/repotest"
)

func snapshot(t *testing.T) (*repo.Repository, *mem.Backend, *repo.Snapshot) {
	t.Helper()
	r, be := repotest.New(t)
	ctx := context.Background()
	w := r.NewSnapshotWriter(ctx)
	data := make([]byte, 600<<10)
	rand.New(rand.NewSource(1)).Read(data)
	w.AddFile("base/1/16384", repo.NodeMeta{Mode: 0o600}, bytes.NewReader(data), repo.SplitFixed)
	w.AddFile("PG_VERSION", repo.NodeMeta{Mode: 0o600}, strings.NewReader("15\n"), repo.SplitCDC)
	s, err := w.Commit(ctx, repo.SnapshotInfo{Kind: "basebackup"})
	if err != nil {
		t.Fatal(err)
	}
	seg := make([]byte, 1<<20)
	if _, err := r.SaveWAL(ctx, 1, "000000010000000000000002.partial", seg[:5000], true); err != nil {
		t.Fatal(err)
	}
	return r, be, s
}

func damage(t *testing.T, be *mem.Backend, r *repo.Repository, id chunk.ID) {
	t.Helper()
	ctx := context.Background()
	e, _ := r.LookupBlob(id)
	h := backend.Handle{Type: backend.PackFile, Name: e.Pack.String()}
	data, err := be.Load(ctx, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	data[int(e.Offset)+int(e.Length)/2] ^= 1
	be.Remove(ctx, h)
	be.Save(ctx, h, data)
}

func TestChunks(t *testing.T) {
	r, be, s := snapshot(t)
	ctx := context.Background()
	wal := []WALFile{{Timeline: 1, Name: "000000010000000000000002.partial"}}
	rep, err := Chunks(ctx, r, s, ChunkOptions{WAL: wal})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 || rep.Files != 2 || rep.WALFiles != 1 || rep.Chunks < 6 {
		t.Fatalf("good snapshot: %+v", rep)
	}

	tests := []struct {
		name   string
		wal    []WALFile
		damage bool
		want   string
	}{
		{"missing WAL", []WALFile{{Timeline: 1, Name: "000000010000000000000003"}}, false, "WAL 000000010000000000000003"},
		{"damaged chunk", nil, true, "base/1/16384"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rr := r
			if tt.damage {
				n, _ := r.Lookup(ctx, s, "base/1/16384")
				refs, _ := r.ChunkList(ctx, n)
				damage(t, be, r, refs[2].ID)
				fresh, err := repo.Open(ctx, be, []byte(repotest.Password), repo.Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer fresh.Close()
				rr = fresh
			}
			rep, err := Chunks(ctx, rr, s, ChunkOptions{WAL: tt.wal})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Problems) != 1 || rep.Problems[0].Object != tt.want {
				t.Fatalf("problems: %+v, want one about %s", rep.Problems, tt.want)
			}
		})
	}
}

func TestLastLines(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 1, "c"},
		{"a\nb\nc", 2, "b | c"},
		{"", 3, ""},
	}
	for _, tt := range tests {
		if got := lastLines(tt.in, tt.n); got != tt.want {
			t.Errorf("lastLines(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

func TestFindPGBin(t *testing.T) {
	if _, err := FindPGBin(t.TempDir(), 15); err == nil || !strings.Contains(err.Error(), "--pg-bin") {
		t.Fatalf("a folder without pg_ctl: %v", err)
	}
	if _, err := FindPGBin("", 99); err == nil || !strings.Contains(err.Error(), "postgresql-99") {
		t.Fatalf("a major that is not installed: %v", err)
	}
}

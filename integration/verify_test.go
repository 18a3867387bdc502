package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/integration/pgtest"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/file"
)

// verifyDoc is the part of verify's JSON document the tests read.
type verifyDoc struct {
	ID       string `json:"id"`
	Mode     string `json:"mode"`
	OK       bool   `json:"ok"`
	Problems []struct {
		Object  string `json:"object"`
		Chunk   string `json:"chunk"`
		Message string `json:"message"`
	} `json:"problems"`
	Chunks *struct {
		Files    int64 `json:"files"`
		Chunks   int64 `json:"chunks"`
		WALFiles int64 `json:"wal_files"`
	} `json:"chunks"`
	Boot *struct {
		Phases  map[string]float64 `json:"phases"`
		Reached string             `json:"reached"`
		AmCheck string             `json:"amcheck"`
		SQLRow  []string           `json:"sql_first_row"`
		Overlay struct {
			BaseBytesRead int64 `json:"base_bytes_read"`
			ReadErrors    int64 `json:"read_errors"`
		} `json:"overlay"`
	} `json:"boot"`
}

func verifyJSON(t *testing.T, env []string, want int, args ...string) (verifyDoc, result) {
	t.Helper()
	res := runRoot(t, env, append([]string{"--output", "json", "verify"}, args...)...)
	var doc verifyDoc
	if err := json.Unmarshal([]byte(res.stdout), &doc); err != nil || res.code != want {
		t.Fatalf("pgvault verify %v: exit %d (want %d), %v\nstdout: %s\nstderr: %s", args, res.code, want, err, res.stdout, res.stderr)
	}
	return doc, res
}

func TestVerify(t *testing.T) {
	v := newPITRVault(t)
	c := pgtest.Start(t, pgtest.Options{Settings: v.archiveSettings()})
	c.PgbenchInit(t, 1)
	c.CreateMarkers(t)
	rel := c.QueryString(t, "SELECT pg_relation_filepath('pgbench_accounts')")
	b := v.backup(c)
	pitrMarker(t, c, "m1")
	pitrSwitchAndWait(t, c)
	env := v.rootEnv(t)

	t.Run("chunks of a good backup", func(t *testing.T) {
		doc, _ := verifyJSON(t, env, 0, "latest")
		if !doc.OK || doc.Mode != "chunks" || doc.Chunks == nil || doc.Chunks.Files < 900 || doc.Chunks.WALFiles < 1 {
			t.Fatalf("verify: %+v", doc)
		}
	})

	t.Run("boot a good backup", func(t *testing.T) {
		doc, _ := verifyJSON(t, env, 0, "latest", "--boot", "--sql", "SELECT count(*), sum(abalance) FROM pgbench_accounts")
		bt := doc.Boot
		if !doc.OK || bt == nil || bt.Reached != "promoted" || bt.AmCheck != "clean" || strings.Join(bt.SQLRow, ",") != "100000,0" {
			t.Fatalf("verify --boot: %+v", doc)
		}
		for _, p := range []string{"mount", "start", "recovery", "amcheck", "sql", "stop"} {
			if _, ok := bt.Phases[p]; !ok {
				t.Fatalf("no timing of phase %s: %v", p, bt.Phases)
			}
		}
		t.Logf("verify --boot phases (s): %v; %d bytes read from the repository", bt.Phases, bt.Overlay.BaseBytesRead)
		// Nothing is left mounted or running.
		if out, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(out), "pgvault-verify") {
			t.Fatal("verify left a mount behind")
		}
	})

	t.Run("boot to a point in time, paused", func(t *testing.T) {
		doc, _ := verifyJSON(t, env, 0, b.ID, "--boot", "--to-lsn", b.StopLSN, "--target-action", "pause",
			"--sql", "SELECT count(*) FROM "+pgtest.MarkerTable)
		if doc.Boot.Reached != "paused" || strings.Join(doc.Boot.SQLRow, ",") != "0" {
			t.Fatalf("verify --boot --to-lsn: %+v", doc.Boot)
		}
	})

	// Damage one chunk of pgbench_accounts in its pack file.
	c.Stop(t, "fast")
	damaged := damageChunkOf(t, v, b.ID, rel)

	t.Run("chunks of a damaged backup", func(t *testing.T) {
		doc, res := verifyJSON(t, env, 3, "latest")
		if doc.OK || len(doc.Problems) == 0 || doc.Problems[0].Object != rel || doc.Problems[0].Chunk != damaged {
			t.Fatalf("verify of a damaged backup: %+v", doc.Problems)
		}
		lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], rel) || !strings.Contains(lines[0], damaged) {
			t.Fatalf("stderr should be one line naming %s and chunk %s:\n%s", rel, damaged, res.stderr)
		}
	})

	t.Run("boot a damaged backup", func(t *testing.T) {
		doc, res := verifyJSON(t, env, 3, "latest", "--boot", "--sql", "SELECT sum(abalance) FROM pgbench_accounts")
		if doc.OK || doc.Boot == nil || doc.Boot.Overlay.ReadErrors == 0 {
			t.Fatalf("verify --boot of a damaged backup: %+v", doc)
		}
		t.Logf("verify --boot of a damaged backup: %s", strings.TrimSpace(res.stderr))
	})
}

// damageChunkOf flips a byte inside the middle chunk of a file of a
// snapshot, in its pack file, and returns the chunk's short ID.
func damageChunkOf(t *testing.T, v *pitrVault, snapID, path string) string {
	t.Helper()
	ctx := context.Background()
	be, err := file.New(v.repo)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, be, []byte("pitr secret"), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s, err := r.LoadSnapshot(ctx, snapID)
	if err != nil {
		t.Fatal(err)
	}
	n, err := r.Lookup(ctx, s, path)
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := r.ChunkList(ctx, n)
	if err != nil || len(chunks) < 3 {
		t.Fatalf("%s has %d chunks (%v)", path, len(chunks), err)
	}
	c := chunks[len(chunks)/2]
	e, ok := r.LookupBlob(c.ID)
	if !ok {
		t.Fatalf("chunk %s is not indexed", c.ID.Short())
	}
	pack := filepath.Join(v.repo, filepath.FromSlash(backend.Handle{Type: backend.PackFile, Name: e.Pack.String()}.Path()))
	f, err := os.OpenFile(pack, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	off := int64(e.Offset) + int64(e.Length)/2
	f.ReadAt(b, off)
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	t.Logf("flipped a byte of chunk %s of %s in pack %s", c.ID.Short(), path, e.Pack.Short())
	return c.ID.Short()
}

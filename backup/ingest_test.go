package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/repotest"
)

// TestIngestReassemblesArchive feeds a tar archive to ingest in pieces of
// uneven sizes (smaller and larger than a block, as CopyData messages
// arrive) and checks that every file comes back byte for byte.
func TestIngestReassemblesArchive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.IntN(7)) // compressible, like pages
		}
		return b
	}
	files := map[string][]byte{
		"PG_VERSION":        []byte("15\n"),
		"backup_label":      []byte("START WAL LOCATION: 0/2000028\n"),
		"base/5/16384":      random(3*blockSize + 8192),
		"base/5/16384_fsm":  random(24576),
		"global/pg_control": random(8192),
		"pg_xact/0000":      random(blockSize),
		"empty":             nil,
	}
	order := []string{"PG_VERSION", "backup_label", "base/5/16384", "base/5/16384_fsm", "global/pg_control", "pg_xact/0000", "empty"}
	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	for _, d := range []string{"base", "base/5", "global", "pg_xact"} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o700, ModTime: time.Unix(1e9, 0)})
	}
	for _, name := range order {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o600, Size: int64(len(files[name])), ModTime: time.Unix(1e9, 0)})
		tw.Write(files[name])
	}
	tw.Close()

	for _, maxPiece := range []int{1 << 10, 32 << 10, 3 * blockSize} {
		r, _ := repotest.New(t)
		ctx := context.Background()
		info := &Info{StartTime: time.Unix(1e9, 0)}
		in := &ingest{w: r.NewSnapshotWriter(ctx), r: r, info: info, t0: time.Now()}
		if err := in.archive("base.tar", ""); err != nil {
			t.Fatal(err)
		}
		for rest := archive.Bytes(); len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(maxPiece))
			// The receiver reuses its buffer: hand ingest a copy that is
			// scribbled over after the call, as pgx's would be.
			piece := bytes.Clone(rest[:n])
			if err := in.data(bytes.NewReader(piece), len(piece)); err != nil {
				t.Fatalf("pieces up to %d: data: %v", maxPiece, err)
			}
			for i := range piece {
				piece[i] = 0xff
			}
			rest = rest[n:]
		}
		if err := in.finishArchive(); err != nil {
			t.Fatalf("pieces up to %d: finish: %v", maxPiece, err)
		}
		if in.info.BackupLabel != string(files["backup_label"]) {
			t.Errorf("pieces up to %d: backup_label %q", maxPiece, in.info.BackupLabel)
		}
		snap, err := in.w.Commit(ctx, repo.SnapshotInfo{Kind: SnapshotKind, Label: "t", StartTime: info.StartTime, EndTime: info.StartTime})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]byte{}
		err = r.Walk(ctx, snap.Root, func(p string, n *repo.Node) error {
			if n.Type != repo.NodeFile {
				return nil
			}
			f, err := r.OpenNode(ctx, n)
			if err != nil {
				return err
			}
			var b bytes.Buffer
			if _, err := f.WriteTo(ctx, &b, 2); err != nil {
				return err
			}
			got[p] = b.Bytes()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for name, want := range files {
			if !bytes.Equal(got[name], want) {
				t.Errorf("pieces up to %d: %s: got %d bytes, want %d (equal: %v)", maxPiece, name, len(got[name]), len(want), bytes.Equal(got[name], want))
			}
		}
		if len(got) != len(files) {
			t.Errorf("pieces up to %d: %d files stored, want %d", maxPiece, len(got), len(files))
		}
	}
}

// TestIngestReportsDamagedArchive: a damaged tar header is an error by the
// end of the archive at the latest, not a hang or a silent skip.
func TestIngestReportsDamagedArchive(t *testing.T) {
	r, _ := repotest.New(t)
	ctx := context.Background()
	in := &ingest{w: r.NewSnapshotWriter(ctx), r: r, info: &Info{}, t0: time.Now()}
	defer in.w.Abort()
	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "PG_VERSION", Mode: 0o600, Size: 3})
	tw.Write([]byte("15\n"))
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "base/1", Mode: 0o600, Size: 4 * blockSize})
	tw.Write(make([]byte, 4*blockSize))
	tw.Close()
	stream := archive.Bytes()
	stream[1024+148] ^= 0x55 // the second header's checksum field
	if err := in.archive("base.tar", ""); err != nil {
		t.Fatal(err)
	}
	var err error
	for rest := stream; len(rest) > 0 && err == nil; {
		n := min(len(rest), 32<<10)
		err = in.data(bytes.NewReader(rest[:n]), n)
		rest = rest[n:]
	}
	if err == nil {
		err = in.finishArchive()
	}
	if err == nil {
		t.Fatal("a damaged archive was accepted")
	}
}

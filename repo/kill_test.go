package repo

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pgvault/pgvault/repo/backend/file"
)

// TestMain lets the test binary act as a writer process that the kill test
// can SIGKILL at an arbitrary moment.
func TestMain(m *testing.M) {
	if dir := os.Getenv("PGVAULT_TEST_WRITER_REPO"); dir != "" {
		os.Exit(runWriterChild(dir))
	}
	os.Exit(m.Run())
}

// runWriterChild writes snapshots and WAL into the file repository at dir
// until it is killed.
func runWriterChild(dir string) int {
	be, err := file.New(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r, err := Open(ctx, be, []byte(testPassword), Options{PackSize: 512 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	seed, _ := strconv.Atoi(os.Getenv("PGVAULT_TEST_SEED"))
	for i := 0; ; i++ {
		w := r.NewSnapshotWriter(ctx)
		for f := range 6 {
			data := randBytes(uint64(seed*1000+i*10+f), 1<<20)
			if _, err := w.AddFile(fmt.Sprintf("base/1/%d", f), NodeMeta{Mode: 0o600}, bytes.NewReader(data), SplitFixed); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		if _, err := w.Commit(ctx, SnapshotInfo{Kind: "files"}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if _, err := r.SaveWAL(ctx, 1, fmt.Sprintf("%024X", i+1), randBytes(uint64(i), 1<<20), false); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
}

// TestKillDuringWrite kills a writer process with SIGKILL at random moments
// and checks that every time the repository passes check, lists only
// complete snapshots, and accepts the next writer.
func TestKillDuringWrite(t *testing.T) {
	dir := t.TempDir()
	be, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(ctx, be, InitOptions{Password: []byte(testPassword), KDF: testKDF()}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(42, 42))
	for round := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "PGVAULT_TEST_WRITER_REPO="+dir, "PGVAULT_TEST_SEED="+strconv.Itoa(round))
		cmd.Stderr = os.Stderr
		before := countPacks(t, dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		// The kill lands at a random moment of the writing: once the
		// writer has stored a pack (it has opened the repository and is
		// at work), and a random 0-600 ms later. That moment is the
		// point, so the second wait is on the clock.
		tick := time.NewTicker(5 * time.Millisecond)
		deadline := time.After(30 * time.Second)
		for countPacks(t, dir) <= before {
			select {
			case err := <-exited:
				t.Fatalf("round %d: the writer exited before it stored a pack: %v", round, err)
			case <-deadline:
				t.Fatalf("round %d: the writer stored no pack within 30 s", round)
			case <-tick.C:
			}
		}
		tick.Stop()
		select {
		case err := <-exited:
			t.Fatalf("round %d: the writer exited on its own: %v", round, err)
		case <-time.After(time.Duration(rng.IntN(600)) * time.Millisecond):
		}
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited

		r, err := Open(ctx, be, []byte(testPassword), Options{})
		if err != nil {
			t.Fatalf("round %d: open after kill: %v", round, err)
		}
		res, err := r.Check(ctx, CheckOptions{ReadData: true})
		if err != nil {
			t.Fatalf("round %d: check: %v", round, err)
		}
		if len(res.Errors) > 0 {
			t.Fatalf("round %d: check after kill -9: %v", round, res.Errors)
		}
		snaps, err := r.Snapshots(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range snaps {
			for f := range 6 {
				if _, err := r.OpenFile(ctx, s, fmt.Sprintf("base/1/%d", f)); err != nil {
					t.Fatalf("round %d: listed snapshot %s is incomplete: %v", round, s.ShortID(), err)
				}
			}
		}
		t.Logf("round %d: %d snapshots, %d packs, %d warnings", round, len(snaps), res.Packs, len(res.Warnings))
		r.Close()
	}
}

// countPacks counts the packs of the file repository at dir (not the
// temporary files of unfinished saves, named .tmp-*).
func countPacks(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(dir, "packs"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && d.Name()[0] != '.' {
			n++
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return n
}

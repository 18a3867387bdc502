package integration

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/pgtest"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend/file"
)

// TestWriteOnlyKey: the agent backs up and streams WAL with only a
// write-only credential; with it no stored file or WAL content can be
// read (every chunk of every backup and segment fails), and every
// command that reads contents refuses it with one line and writes
// nothing; the full key restores everything the write-only host stored.
func TestWriteOnlyKey(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.CreateMarkers(t)
	v := newPostgresVault(t)
	cred := filepath.Join(v.base, "write-only")
	var added struct {
		ID        string `json:"id"`
		WriteOnly bool   `json:"write_only"`
	}
	v.json(&added, "repo", "key", "add", "--write-only", "--credential-file", cred)
	if fi, err := os.Stat(cred); err != nil || fi.Mode().Perm() != 0o600 || !added.WriteOnly {
		t.Fatalf("credential file: %v %v, %+v", fi, err, added)
	}
	wo := v.with("PGVAULT_PASSWORD_FILE=" + cred)

	var want []int64
	want = append(want, c.InsertMarker(t, "before the agent").ID)
	s := newAgentSetup(t, c, v)
	s.pw = cred
	s.write(t, c.ConnString("postgres"), `    basebackup:
      interval: 1h
      fast_checkpoint: true
    retention:
      basebackup_count: 1
      interval: 1s
    wal_check:
      interval: 1s
    drill:
      interval: 1s
    synthetic: {interval: 1s, pg_bin: `+pgtest.BinDir+`}`)
	a := s.start(t)
	a.waitState("a backup by the write-only agent", 90*time.Second, func(st agentState) bool {
		m := st.Sites["main"]
		return m.Backup.Count >= 1 && m.WriteOnly && m.WALCheck.Last != nil
	})
	// Two more WAL checks: drills and synthetic backups, due every
	// second once a backup exists, had their turns and were skipped.
	checked := *a.readState().Sites["main"].WALCheck.Last
	a.waitState("two more WAL checks", 30*time.Second, func(st agentState) bool {
		l := st.Sites["main"].WALCheck.Last
		return l != nil && l.Sub(checked) >= 2*time.Second
	})
	for i := range 3 {
		want = append(want, c.InsertMarker(t, fmt.Sprintf("after the backup %d", i)).ID)
	}
	c.SwitchWAL(t)
	want = append(want, c.InsertMarker(t, "in the streamed partial").ID)
	waitStored(t, c, "pgvault")
	st := a.readState().Sites["main"]
	if code, _ := a.stop(); code != 0 {
		t.Fatalf("agent exit %d", code)
	}
	if st.Prune.Runs != 0 || st.Drill.Last != nil || st.Synthetic.Last != nil || st.Synthetic.Taken != 0 || !st.WALCheck.OK {
		t.Fatalf("write-only agent: prune runs %d, drill %v, synthetic %v (%d taken), WAL check ok %v", st.Prune.Runs, st.Drill.Last, st.Synthetic.Last, st.Synthetic.Taken, st.WALCheck.OK)
	}
	if log := a.log.String(); !strings.Contains(log, "write-only key") || strings.Contains(log, "retention failed") {
		t.Fatalf("agent log:\n%s", log)
	}

	// The write-only credential lists, checks and backs up by hand too.
	var list []listedBackup
	wo.json(&list, "list")
	if len(list) != 1 {
		t.Fatalf("list with the write-only key: %d backups", len(list))
	}
	wo.must("wal", "check")
	wo.must("repo", "check")
	wo.backup(c, "--standalone")

	// Every command that reads contents refuses it, writing nothing.
	seg := provenUnreadable(t, v.repo, cred, v.pwFile)
	dir := pgtest.TempDir(t)
	if err := os.Mkdir(filepath.Join(dir, "mnt"), 0o755); err != nil {
		t.Fatal(err)
	}
	refusals := [][]string{
		{"restore", "latest", "--target", filepath.Join(dir, "restored")},
		{"mount", filepath.Join(dir, "mnt"), "--backup", "latest", "--scratch", filepath.Join(dir, "scratch")},
		{"verify", "latest"},
		{"repo", "check", "--read-data"},
		{"prune", "--keep-last", "1", "--apply"},
		{"wal", "fetch", seg, filepath.Join(dir, "fetched")},
		{"repo", "key", "add", "--new-password-file", cred},
	}
	for _, args := range refusals {
		errCase(t, wo, 1, []string{"write-only"}, args...)
	}
	for _, p := range []string{"restored", "fetched", "scratch"} {
		if _, err := os.Stat(filepath.Join(dir, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("a refused command created %s", p)
		}
	}

	// The full key restores what the write-only agent stored: its backup
	// and the WAL it streamed.
	target := v.restore(list[0].ID)
	r := pgtest.StartOn(t, target, pgtest.Options{})
	r.WaitRecoveryDone(t)
	got := r.MarkerIDs(t)
	for _, m := range want {
		if !slices.Contains(got, m) {
			t.Fatalf("restore with the full key: marker %d is missing (have %v)", m, got)
		}
	}
	r.Stop(t, "fast")
}

// provenUnreadable opens the repository with the write-only credential
// and reads every chunk of every file of every backup and every WAL
// segment: each fails with repo.ErrWriteOnly, while timeline history
// files (metadata) read. The full key then reads a chunk of each. It
// returns the name of a stored segment.
func provenUnreadable(t *testing.T, dir, credFile, fullFile string) string {
	t.Helper()
	ctx := context.Background()
	open := func(pwFile string) *repo.Repository {
		pw, err := os.ReadFile(pwFile)
		if err != nil {
			t.Fatal(err)
		}
		be, err := file.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		r, err := repo.Open(ctx, be, []byte(strings.TrimSpace(string(pw))), repo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	wo, full := open(credFile), open(fullFile)
	if !wo.WriteOnly() || full.WriteOnly() {
		t.Fatal("the keys are not what they were made as")
	}
	snaps, err := wo.Snapshots(ctx)
	if err != nil || len(snaps) == 0 {
		t.Fatalf("snapshots with the write-only key: %d, %v", len(snaps), err)
	}
	files, chunks := 0, 0
	for _, s := range snaps {
		err := wo.Walk(ctx, s.Root, func(p string, n *repo.Node) error {
			if n.Type != repo.NodeFile || n.Size == 0 {
				return nil
			}
			refs, err := wo.ChunkList(ctx, n)
			if err != nil {
				return fmt.Errorf("%s: chunk list: %w", p, err)
			}
			for _, ref := range refs {
				if _, err := wo.LoadBlob(ctx, ref.ID); !errors.Is(err, repo.ErrWriteOnly) {
					return fmt.Errorf("%s: chunk %s with the write-only key: %v", p, ref.ID.Short(), err)
				}
				chunks++
			}
			if _, err := full.LoadBlob(ctx, refs[0].ID); err != nil {
				return fmt.Errorf("%s with the full key: %w", p, err)
			}
			files++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	entries, err := wo.ListWAL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var segs, histories int
	var seg string
	for _, e := range entries {
		_, _, err := wo.LoadWAL(ctx, e.Timeline, e.Name)
		switch wal.Classify(e.Name) {
		case wal.KindSegment, wal.KindPartial:
			if !errors.Is(err, repo.ErrWriteOnly) {
				t.Fatalf("WAL %s with the write-only key: %v", e.Name, err)
			}
			if _, _, err := full.LoadWAL(ctx, e.Timeline, e.Name); err != nil {
				t.Fatalf("WAL %s with the full key: %v", e.Name, err)
			}
			if wal.Classify(e.Name) == wal.KindSegment {
				seg = e.Name
			}
			segs++
		default:
			if err != nil {
				t.Fatalf("%s with the write-only key: %v", e.Name, err)
			}
			histories++
		}
	}
	if files == 0 || segs == 0 || seg == "" {
		t.Fatalf("read %d files, %d WAL segments", files, segs)
	}
	t.Logf("write-only key: %d chunks of %d files in %d backups and %d WAL segments unreadable, %d history files read", chunks, files, len(snaps), segs, histories)
	return seg
}

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// ageRepo makes every pack and index object of a file repository look two
// hours old, so that prune's grace period does not protect them.
func ageRepo(t *testing.T, repoDir string) int {
	t.Helper()
	old := time.Now().Add(-2 * time.Hour)
	n := 0
	for _, dir := range []string{"packs", "index"} {
		filepath.Walk(filepath.Join(repoDir, dir), func(p string, info os.FileInfo, err error) error {
			if err == nil && info.Mode().IsRegular() {
				os.Chtimes(p, old, old)
				n++
			}
			return nil
		})
	}
	return n
}

func TestPruneWhileStreamingLosesNothing(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.PgbenchInit(t, 2)
	c.CreateMarkers(t)
	v := newPostgresVault(t)
	s := v.startStreamer("--pg", c.ReplicationConnString())
	waitSlotActive(t, c, "pgvault")

	var want []int64
	mark := func(n int, note string) {
		for i := range n {
			want = append(want, c.InsertMarker(t, fmt.Sprintf("%s %d", note, i)).ID)
		}
	}
	var ids []string
	for i := range 3 {
		mark(5, fmt.Sprintf("before backup %d", i))
		c.Pgbench(context.Background(), t, "-c", "2", "-t", "300")
		ids = append(ids, v.backup(c).ID)
		c.SwitchWAL(t)
	}
	mark(5, "after the backups")
	waitStored(t, c, "pgvault")
	if n := ageRepo(t, v.repo); n == 0 {
		t.Fatal("no repository objects to age")
	}

	// Prune while the streamer keeps writing under load.
	ctx, stopLoad := context.WithCancel(context.Background())
	wait := c.PgbenchBackground(ctx, t, "-c", "2", "-T", "600")
	var dry struct {
		Backups []struct {
			ID   string `json:"id"`
			Keep bool   `json:"keep"`
		} `json:"backups"`
	}
	v.json(&dry, "prune", "--keep-last", "2")
	if len(dry.Backups) != 3 || dry.Backups[2].Keep || dry.Backups[2].ID != ids[0] {
		t.Fatalf("dry run plan: %+v", dry)
	}
	var rep struct {
		WALRemoved []struct{ Name string } `json:"wal_removed"`
		Repository struct {
			BytesFreed   int64 `json:"bytes_freed"`
			PacksDeleted int   `json:"packs_deleted"`
		} `json:"repository"`
	}
	v.json(&rep, "prune", "--keep-last", "2", "--apply")
	mark(5, "during load after prune")
	stopLoad()
	wait()
	mark(3, "last")
	waitStored(t, c, "pgvault")
	s.stop()
	t.Logf("prune removed %d WAL files and freed %d bytes (%d packs deleted)", len(rep.WALRemoved), rep.Repository.BytesFreed, rep.Repository.PacksDeleted)
	if rep.Repository.BytesFreed == 0 || len(rep.WALRemoved) == 0 {
		t.Fatalf("prune freed nothing: %+v", rep)
	}

	var list []struct {
		ID string `json:"id"`
	}
	v.json(&list, "list")
	if len(list) != 2 || list[0].ID != ids[1] || list[1].ID != ids[2] {
		t.Fatalf("after prune: %+v", list)
	}
	v.must("repo", "check", "--read-data")
	if r := v.run("wal", "check"); r.code != 0 {
		t.Fatalf("wal check after prune: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The oldest retained backup replays to the end of the archive.
	postgresOwns(t, v.base)
	target := v.restore(ids[1])
	postgresOwns(t, v.base)
	r := pgtest.StartOn(t, target, pgtest.Options{})
	r.WaitRecoveryDone(t)
	got := r.MarkerIDs(t)
	for _, id := range want {
		if !slices.Contains(got, id) {
			t.Fatalf("marker %d is missing after prune and restore (have %d of %d)", id, len(got), len(want))
		}
	}
}

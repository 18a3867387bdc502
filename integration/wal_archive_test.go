package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/integration/pgtest"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/backend/file"
)

// archiveVault is a repository, password file and cache owned by the
// postgres OS user, with pgvault run as postgres: archive_command and
// restore_command run as postgres, so every command of these tests does
// too.
type archiveVault struct {
	t      *testing.T
	base   string
	repo   string
	pwFile string
	cache  string
}

const archivePassword = "archive secret"

func newArchiveVault(t *testing.T) *archiveVault {
	t.Helper()
	base := pgtest.TempDir(t)
	a := &archiveVault{t: t, base: base, repo: filepath.Join(base, "repo"),
		pwFile: filepath.Join(base, "password"), cache: filepath.Join(base, "cache")}
	if err := os.WriteFile(a.pwFile, []byte(archivePassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	postgresOwns(t, a.pwFile)
	a.must("repo", "init")
	// Prefetchers started by wal fetch outlive it: let them finish before
	// the folders are removed.
	t.Cleanup(func() { a.waitPrefetchers() })
	return a
}

// env is the environment archive_command and restore_command need.
func (a *archiveVault) env() []string {
	return []string{"PGVAULT_REPO=" + a.repo, "PGVAULT_PASSWORD_FILE=" + a.pwFile, "PGVAULT_CACHE_DIR=" + a.cache}
}

// command is a shell command line running pgvault with args and a's
// environment, for archive_command and restore_command.
func (a *archiveVault) command(args string) string {
	return strings.Join(a.env(), " ") + " " + pgvaultBin + " " + args
}

func (a *archiveVault) run(args ...string) result {
	a.t.Helper()
	return a.runEnv(nil, args...)
}

// runEnv runs pgvault as postgres with a's environment plus extra.
func (a *archiveVault) runEnv(extra []string, args ...string) result {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := pgtest.RunAsPostgres(ctx, pgvaultBin, args...)
	cmd.Env = append(append(cmd.Env, a.env()...), extra...)
	return runCmd(a.t, cmd, args)
}

func (a *archiveVault) must(args ...string) string {
	a.t.Helper()
	return succeeded(a.t, a.run(args...), args)
}

func (a *archiveVault) json(into any, args ...string) {
	a.t.Helper()
	decodeJSON(a.t, a.must(append([]string{"--output", "json"}, args...)...), into, args)
}

// fetch writes WAL file name from the repository into the vault's folder
// and returns its bytes.
func (a *archiveVault) fetch(name string) []byte {
	a.t.Helper()
	dest := filepath.Join(a.base, "fetched-"+name)
	a.must("wal", "fetch", "--prefetch", "0", name, dest)
	data, err := os.ReadFile(dest)
	if err != nil {
		a.t.Fatal(err)
	}
	os.Remove(dest)
	return data
}

// spoolDir is where wal fetch spools for this repository.
func (a *archiveVault) spoolDir() string {
	a.t.Helper()
	data, err := os.ReadFile(filepath.Join(a.repo, "config"))
	if err != nil {
		a.t.Fatal(err)
	}
	var cfg struct{ ID string }
	json.Unmarshal(data, &cfg)
	return filepath.Join(a.cache, cfg.ID, "spool")
}

// waitPrefetchers waits (up to 20 s) until no background prefetcher holds
// the spool's lock.
func (a *archiveVault) waitPrefetchers() {
	if err := pgtest.WaitPrefetchers(a.cache, 20*time.Second); err != nil {
		a.t.Error(err)
	}
}

// openRepo opens the repository through the Go API (as root: chown the
// tree back to postgres after writing).
func (a *archiveVault) openRepo() *repo.Repository {
	a.t.Helper()
	be, err := file.New(a.repo)
	if err != nil {
		a.t.Fatal(err)
	}
	r, err := repo.Open(context.Background(), be, []byte(archivePassword), repo.Options{})
	if err != nil {
		a.t.Fatal(err)
	}
	return r
}

// switchWAL completes the current segment and returns its name.
func switchWAL(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	lsn := c.SwitchWAL(t)
	return c.QueryString(t, "SELECT pg_walfile_name($1::pg_lsn)", lsn)
}

// waitArchived waits until archive_command has archived segment name and
// nothing is left waiting; a failed archive_command fails the test.
func waitArchived(t *testing.T, c *pgtest.Cluster, name string) {
	t.Helper()
	waitFor(t, 60*time.Second, "segment "+name+" to be archived", func() (bool, error) {
		state := c.QueryString(t, `SELECT coalesce(last_archived_wal, '') || ' ' || failed_count || ' ' || coalesce(last_failed_wal, '-') || ' ' ||
			(SELECT count(*) FROM pg_ls_dir('pg_wal/archive_status') f WHERE f LIKE '%.ready') FROM pg_stat_archiver`)
		f := strings.Fields(state)
		if len(f) == 4 && f[1] != "0" {
			t.Fatalf("archive_command failed for %s (%s failures): see the server log %s", f[2], f[1], c.LogFile())
		}
		return len(f) == 4 && len(f[0]) >= 24 && f[0][:24] >= name && f[3] == "0", fmt.Errorf("archiver: %s", state)
	})
}

type walCheckJSON struct {
	OK               bool     `json:"ok"`
	From             string   `json:"from"`
	To               string   `json:"to"`
	Timeline         uint32   `json:"timeline"`
	SegmentsExpected int      `json:"segments_expected"`
	Missing          []string `json:"missing"`
	MissingHistory   []string `json:"missing_history"`
	Start            string   `json:"start"`
}

type walFetchJSON struct {
	Source     string  `json:"source"`
	Size       int64   `json:"size"`
	Prefetcher bool    `json:"prefetcher_started"`
	Seconds    float64 `json:"seconds"`
}

// TestArchiveCommandEndToEnd archives with archive_command = 'pgvault wal
// push %p', restores a base backup and recovers it with restore_command =
// 'pgvault wal fetch %f %p' to the end of the archive, and checks push,
// fetch and check on the real WAL on the way.
func TestArchiveCommandEndToEnd(t *testing.T) {
	a := newArchiveVault(t)
	c := pgtest.Start(t, pgtest.Options{Settings: map[string]string{
		"archive_mode":    "on",
		"archive_command": a.command("wal push %p"),
	}})
	c.CreateMarkers(t)
	want := []int64{c.InsertMarker(t, "before the backup").ID}
	var bk backupReport
	a.json(&bk, "--pg", c.ReplicationConnString(), "backup", "--fast-checkpoint")
	var switched []string
	for i := range 3 {
		want = append(want, c.InsertMarker(t, fmt.Sprintf("archived %d", i)).ID)
		c.Exec(t, "CREATE TABLE IF NOT EXISTS filler AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g")
		switched = append(switched, switchWAL(t, c))
	}
	last := switched[len(switched)-1]
	waitArchived(t, c, last)
	startLSN, err := pglogrepl.ParseLSN(bk.StartLSN)
	if err != nil {
		t.Fatal(err)
	}
	segSize := wal.DefaultSegmentSize
	first := wal.SegmentName(1, startLSN, segSize) // the backup's first segment
	next := func(name string, n uint64) string {
		s, err := wal.ParseSegment(name, segSize)
		if err != nil {
			t.Fatal(err)
		}
		return wal.Segment{Timeline: s.Timeline, No: s.No + n}.Name(segSize)
	}

	var check walCheckJSON
	a.json(&check, "wal", "check")
	if !check.OK || check.From != first || check.To != last || check.Timeline != 1 || len(check.Missing) != 0 ||
		check.Start != "backup "+bk.ID[:8] {
		t.Fatalf("wal check after archiving: %+v (backup from %s, last switched %s)", check, first, last)
	}

	firstData := a.fetch(first)
	tmp := pgtest.TempDir(t)
	t.Run("push again is fine", func(t *testing.T) {
		p := filepath.Join(tmp, first)
		os.WriteFile(p, firstData, 0o600)
		postgresOwns(t, p)
		if out := a.must("wal", "push", p); !strings.Contains(out, "already archived") {
			t.Fatalf("second push: %s", out)
		}
	})
	t.Run("push refuses a header that does not match the name", func(t *testing.T) {
		name := next(last, 100)
		p := filepath.Join(tmp, name)
		os.WriteFile(p, firstData, 0o600)
		postgresOwns(t, p)
		r := a.run("wal", "push", p)
		if r.code != 1 || !strings.Contains(r.stderr, "refusing to archive "+name) || !strings.Contains(r.stderr, "nothing was stored") {
			t.Fatalf("push under the wrong name: exit %d: %s", r.code, r.stderr)
		}
		if r := a.run("wal", "fetch", "--prefetch", "0", name, filepath.Join(tmp, "x")); r.code != 1 {
			t.Fatalf("the refused file was stored: fetch exit %d", r.code)
		}
	})
	t.Run("push refuses different content under an archived name", func(t *testing.T) {
		sys := c.SystemIdentifier(t)
		p := filepath.Join(pgtest.TempDir(t), first)
		os.WriteFile(p, wal.FakeSegment(1, wal.SegmentOf(1, startLSN, segSize).Start(segSize), segSize, sys), 0o600)
		postgresOwns(t, p)
		r := a.run("wal", "push", p)
		if r.code != 1 || !strings.Contains(r.stderr, "This is serious") {
			t.Fatalf("conflicting push: exit %d: %s", r.code, r.stderr)
		}
		if got := a.fetch(first); !bytes.Equal(got, firstData) {
			t.Fatal("the archived segment changed")
		}
	})
	t.Run("fetch refuses a stored segment that is not what its name says", func(t *testing.T) {
		name := next(last, 50)
		r := a.openRepo()
		if _, err := r.SaveWAL(context.Background(), 1, name, firstData, false); err != nil {
			t.Fatal(err)
		}
		r.Close()
		postgresOwns(t, a.repo)
		dest := filepath.Join(tmp, "RECOVERYXLOG")
		res := a.run("wal", "fetch", "--prefetch", "0", name, dest)
		if res.code != 1 || !strings.Contains(res.stderr, name) || !strings.Contains(res.stderr, "damaged") {
			t.Fatalf("fetch of a bad segment: exit %d: %s", res.code, res.stderr)
		}
		if _, err := os.Stat(dest); err == nil {
			t.Fatal("a bad segment was written for PostgreSQL")
		}
		// Leave the catalogue as archiving made it: restore plans from it.
		r = a.openRepo()
		defer r.Close()
		if err := r.DeleteWAL(context.Background(), 1, name); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("fetch of a segment that is not archived exits 1", func(t *testing.T) {
		r := a.run("wal", "fetch", next(last, 200), filepath.Join(tmp, "y"))
		if r.code != 1 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "is not in the repository") {
			t.Fatalf("fetch of a missing segment: exit %d: %q", r.code, r.stderr)
		}
	})
	t.Run("a prefetched segment is served without the password", func(t *testing.T) {
		spooled := next(first, 1)
		var miss, hit walFetchJSON
		t0 := time.Now()
		a.json(&miss, "wal", "fetch", "--prefetch", "2", first, filepath.Join(tmp, "a"))
		missWall := time.Since(t0)
		if miss.Source != "repository" || !miss.Prefetcher {
			t.Fatalf("first fetch: %+v", miss)
		}
		waitFor(t, 20*time.Second, spooled+" to be prefetched into "+a.spoolDir(), func() (bool, error) {
			if _, err := os.Stat(filepath.Join(a.spoolDir(), spooled)); err == nil {
				return true, nil
			}
			log, _ := os.ReadFile(filepath.Join(a.spoolDir(), "prefetch.log"))
			return false, fmt.Errorf("prefetch.log: %s", log)
		})
		os.Rename(a.pwFile, a.pwFile+".away")
		t0 = time.Now()
		a.json(&hit, "wal", "fetch", "--prefetch", "0", spooled, filepath.Join(tmp, "b"))
		hitWall := time.Since(t0)
		os.Rename(a.pwFile+".away", a.pwFile)
		if hit.Source != "spool" || hit.Size != int64(segSize) {
			t.Fatalf("fetch of a prefetched segment: %+v", hit)
		}
		got, _ := os.ReadFile(filepath.Join(tmp, "b"))
		if !bytes.Equal(got, a.fetch(spooled)) {
			t.Fatal("the spooled copy differs from the repository's")
		}
		t.Logf("wal fetch of a 16 MiB segment: miss %.3f s (%v wall), spool hit without password %.3f s (%v wall)",
			miss.Seconds, missWall.Round(time.Millisecond), hit.Seconds, hitWall.Round(time.Millisecond))
	})
	t.Run("push timing", func(t *testing.T) {
		b := newArchiveVault(t)
		var names []string
		for _, n := range append([]string{first}, switched...) {
			if n != first && slices.Contains(names, n) {
				continue
			}
			p := filepath.Join(tmp, "timing", n)
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, a.fetch(n), 0o600)
			names = append(names, p)
		}
		postgresOwns(t, filepath.Join(tmp, "timing"))
		var fresh, again []float64
		for _, p := range names {
			var rep struct {
				AlreadyStored bool `json:"already_stored"`
			}
			t0 := time.Now()
			b.json(&rep, "wal", "push", p)
			fresh = append(fresh, time.Since(t0).Seconds())
			t0 = time.Now()
			b.json(&rep, "wal", "push", p)
			again = append(again, time.Since(t0).Seconds())
			if !rep.AlreadyStored {
				t.Fatal("second push stored again")
			}
		}
		t.Logf("wal push of a 16 MiB segment into a fresh repository (process wall time): new %s s, already stored %s s",
			median(fresh), median(again))
	})

	// Disaster: the server is gone; restore the backup and recover from
	// the archive alone.
	c.Stop(t, "fast")
	target := filepath.Join(pgtest.TempDir(t), "data")
	a.must("restore", bk.ID, "--target", target)
	conf := fmt.Sprintf("\n# written by TestArchiveCommandEndToEnd\nrestore_command = '%s'\nrecovery_target_timeline = 'latest'\n",
		a.command("wal fetch --prefetch 4 %f %p"))
	f, err := os.OpenFile(filepath.Join(target, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(conf)
	f.Close()
	os.WriteFile(filepath.Join(target, "recovery.signal"), nil, 0o600)
	t0 := time.Now()
	r := pgtest.StartOn(t, target, pgtest.Options{})
	r.WaitRecoveryDone(t)
	recovered := time.Since(t0)
	got := r.MarkerIDs(t)
	for _, id := range want {
		if !slices.Contains(got, id) {
			t.Fatalf("marker %d is missing after recovery from the archive (have %v, want %v)", id, got, want)
		}
	}
	if n := r.QueryInt(t, "SELECT count(*) FROM filler"); n != 20000 {
		t.Fatalf("filler has %d rows", n)
	}
	t.Logf("recovered %d segments through restore_command in %v", len(switched)+1, recovered.Round(time.Millisecond))
	serverLog, _ := os.ReadFile(r.LogFile())
	if !strings.Contains(string(serverLog), fmt.Sprintf("restored log file %q from archive", last)) {
		t.Fatalf("the server log does not show %s restored by restore_command", last)
	}

	// The recovered server archives its new timeline into the same
	// repository: wal check follows 00000002.history across the fork.
	r.InsertMarker(t, "on timeline 2")
	tli2 := switchWAL(t, r)
	if !strings.HasPrefix(tli2, "00000002") {
		t.Fatalf("the recovered server is on %s, not on timeline 2", tli2)
	}
	waitArchived(t, r, tli2)
	a.json(&check, "wal", "check")
	if !check.OK || check.Timeline != 2 || check.From != first || check.To != tli2 || len(check.Missing) != 0 {
		t.Fatalf("wal check across the timeline switch: %+v", check)
	}

	// A segment lost from the repository is a gap that check names.
	lost := switched[1]
	if err := os.Remove(filepath.Join(a.repo, "wal", "00000001", lost)); err != nil {
		t.Fatal(err)
	}
	res := a.run("--output", "json", "wal", "check")
	var gaps walCheckJSON
	if res.code != 3 || json.Unmarshal([]byte(res.stdout), &gaps) != nil || gaps.OK || len(gaps.Missing) != 1 || gaps.Missing[0] != lost {
		t.Fatalf("wal check with %s deleted: exit %d\n%s\n%s", lost, res.code, res.stdout, res.stderr)
	}
	res = a.run("wal", "check")
	if res.code != 3 || !strings.Contains(res.stdout, "missing: "+lost) || !strings.Contains(res.stderr, "gaps") {
		t.Fatalf("wal check text: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	res = a.runEnv([]string{"PGVAULT_CACHE_DIR=" + filepath.Join(a.base, "cache2")}, "wal", "fetch", "--prefetch", "0", lost, filepath.Join(tmp, "z"))
	if res.code != 1 || !strings.Contains(res.stderr, "not in the repository") {
		t.Fatalf("fetch of the deleted segment: exit %d: %s", res.code, res.stderr)
	}
}

func median(xs []float64) string {
	s := slices.Clone(xs)
	sort.Float64s(s)
	if len(s) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f (median of %d; min %.2f, max %.2f)", s[len(s)/2], len(s), s[0], s[len(s)-1])
}

// preflightJSON is the wal preflight document.
type preflightJSON struct {
	Ready    bool `json:"ready"`
	Findings []struct {
		Setting string `json:"setting"`
		Status  string `json:"status"`
		Message string `json:"message"`
		Fix     string `json:"fix"`
	} `json:"findings"`
}

func (p preflightJSON) finding(setting string) (status, message, fix string) {
	for _, f := range p.Findings {
		if f.Setting == setting {
			return f.Status, f.Message, f.Fix
		}
	}
	return "", "", ""
}

// runPreflight runs wal preflight (no repository needed) as root.
func runPreflight(t *testing.T, args ...string) (result, preflightJSON) {
	t.Helper()
	cmd := exec.Command(pgvaultBin, append([]string{"--output", "json"}, args...)...)
	cmd.Env = filteredEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var doc preflightJSON
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("wal preflight %v: exit %d, bad JSON %v:\n%s\n%s", args, code, err, out.String(), errb.String())
	}
	return result{code, out.String(), errb.String()}, doc
}

func TestPreflight(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{Settings: map[string]string{"max_slot_wal_keep_size": "1MB"}})
	c.Exec(t, "CREATE ROLE bob LOGIN")
	port := strconv.Itoa(c.Port())

	t.Run("ready", func(t *testing.T) {
		// The replication conninfo the other commands use works too.
		res, doc := runPreflight(t, "--pg", c.ReplicationConnString(), "wal", "preflight")
		if res.code != 0 || !doc.Ready {
			t.Fatalf("preflight of a good cluster: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		for _, s := range []string{"wal_level", "max_wal_senders", "max_replication_slots", "role", "slot", "replication_connection"} {
			if st, msg, _ := doc.finding(s); st != "ok" {
				t.Errorf("%s: %s %s", s, st, msg)
			}
		}
		if st, msg, _ := doc.finding("max_slot_wal_keep_size"); st != "warning" || !strings.Contains(msg, "invalidates") {
			t.Errorf("max_slot_wal_keep_size: %s %s", st, msg)
		}
	})
	t.Run("role without REPLICATION", func(t *testing.T) {
		res, doc := runPreflight(t, "--pg", "host=127.0.0.1 port="+port+" user=bob dbname=postgres sslmode=disable", "wal", "preflight")
		if res.code != 3 || doc.Ready {
			t.Fatalf("exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		if st, _, fix := doc.finding("role"); st != "error" || !strings.Contains(fix, `ALTER ROLE "bob" REPLICATION`) {
			t.Fatalf("role finding: %s %s", st, fix)
		}
		if st, _, fix := doc.finding("replication_connection"); st != "error" || !strings.Contains(fix, "REPLICATION") {
			t.Fatalf("replication probe: %s %s", st, fix)
		}
		if !strings.Contains(res.stderr, "not ready") || strings.Count(strings.TrimSpace(res.stderr), "\n") != 0 {
			t.Fatalf("stderr: %q", res.stderr)
		}
	})
	t.Run("slot invalidated by max_slot_wal_keep_size", func(t *testing.T) {
		c.Exec(t, "SELECT pg_create_physical_replication_slot('lost', true)")
		c.Exec(t, "CREATE TABLE filler (v text)")
		// Write WAL past max_slot_wal_keep_size until the slot is lost.
		waitFor(t, 30*time.Second, "PostgreSQL to invalidate the slot", func() (bool, error) {
			status := c.QueryString(t, "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = 'lost'")
			if status == "lost" {
				return true, nil
			}
			c.Exec(t, "INSERT INTO filler SELECT repeat('x', 500) FROM generate_series(1, 5000)")
			c.SwitchWAL(t)
			c.Checkpoint(t)
			return false, fmt.Errorf("wal_status %q", status)
		})
		res, doc := runPreflight(t, "--pg", c.ConnString("postgres"), "wal", "preflight", "--slot", "lost")
		if res.code != 3 || doc.Ready {
			t.Fatalf("exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		st, msg, fix := doc.finding("slot")
		if st != "error" || !strings.Contains(msg, "invalidated") ||
			!strings.Contains(fix, "pg_drop_replication_slot('lost')") || !strings.Contains(fix, "pgvault backup") {
			t.Fatalf("slot finding: %s %q %q", st, msg, fix)
		}
		// The text form puts the fix on the finding's line.
		cmd := exec.Command(pgvaultBin, "--pg", c.ConnString("postgres"), "wal", "preflight", "--slot", "lost")
		cmd.Env = filteredEnv()
		out, _ := cmd.Output()
		if !strings.Contains(string(out), "fix: SELECT pg_drop_replication_slot('lost');") {
			t.Fatalf("text output:\n%s", out)
		}
	})
}

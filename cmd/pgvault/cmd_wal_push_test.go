package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/internal/pg/wal"
)

const testSegSize = 1 << 20

// walFile writes fake segment no of timeline 1 (1 MiB) into dir under
// name (its own name if empty) and returns its path and content.
func walFile(t *testing.T, dir string, no uint64, name string) (string, []byte) {
	t.Helper()
	s := wal.Segment{Timeline: 1, No: no}
	if name == "" {
		name = s.Name(testSegSize)
	}
	data := wal.FakeSegment(1, s.Start(testSegSize), testSegSize, 42)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, data
}

func segN(no uint64) string { return wal.Segment{Timeline: 1, No: no}.Name(testSegSize) }

func TestWALPushFetch(t *testing.T) {
	_, args := newRepo(t)
	src, out := t.TempDir(), t.TempDir()
	p3, seg3 := walFile(t, src, 3, "")
	wrong, _ := walFile(t, src, 3, segN(4)) // segment 3's bytes under segment 4's name
	other3 := filepath.Join(t.TempDir(), segN(3))
	os.WriteFile(other3, wal.FakeSegment(1, wal.Segment{Timeline: 1, No: 3}.Start(testSegSize), testSegSize, 43), 0o600)
	hist := filepath.Join(src, "00000002.history")
	os.WriteFile(hist, []byte("1\t0/500000\tno recovery target specified\n"), 0o600)
	badHist := filepath.Join(t.TempDir(), "00000003.history")
	os.WriteFile(badHist, []byte("not a history\n"), 0o600)
	notWAL := filepath.Join(src, "postmaster.pid")
	os.WriteFile(notWAL, []byte("1\n"), 0o600)

	tests := []struct {
		name string
		args []string
		code int
		msg  string // in stdout (code 0) or the one stderr line
	}{
		{"push", []string{"wal", "push", p3}, 0, "archived " + segN(3)},
		{"push again", []string{"wal", "push", p3}, 0, "already archived"},
		{"conflict", []string{"wal", "push", other3}, 1, "This is serious"},
		{"header does not match the name", []string{"wal", "push", wrong}, 1, "refusing to archive " + segN(4)},
		{"bad history", []string{"wal", "push", badHist}, 1, "refusing to archive 00000003.history"},
		{"history", []string{"wal", "push", hist}, 0, "timeline history"},
		{"not a WAL file", []string{"wal", "push", notWAL}, 2, "not a WAL file name"},
		{"missing file", []string{"wal", "push", filepath.Join(src, segN(9))}, 1, "no such file"},
		{"push without a path", []string{"wal", "push"}, 2, "one WAL file path"},
		{"fetch", []string{"wal", "fetch", "--prefetch", "0", segN(3), filepath.Join(out, "RECOVERYXLOG")}, 0, ""},
		{"fetch history", []string{"wal", "fetch", "00000002.history", filepath.Join(out, "RECOVERYHISTORY")}, 0, ""},
		{"fetch refused push", []string{"wal", "fetch", "--prefetch", "0", segN(4), filepath.Join(out, "x")}, 1, "is not in the repository"},
		{"fetch missing history", []string{"wal", "fetch", "00000009.history", filepath.Join(out, "x")}, 1, "is not in the repository"},
		{"fetch bad name", []string{"wal", "fetch", "RECOVERYXLOG", filepath.Join(out, "x")}, 2, "not a WAL file name"},
		{"fetch negative prefetch", []string{"wal", "fetch", "--prefetch", "-1", segN(3), filepath.Join(out, "x")}, 2, "--prefetch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := pgv(t, nil, append(args, tt.args...)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			if code == 0 {
				if !strings.Contains(stdout, tt.msg) {
					t.Fatalf("stdout %q does not contain %q", stdout, tt.msg)
				}
				return
			}
			if line := oneLineErr(t, stderr); !strings.Contains(line, tt.msg) {
				t.Fatalf("stderr %q does not contain %q", line, tt.msg)
			}
		})
	}
	got, _ := os.ReadFile(filepath.Join(out, "RECOVERYXLOG"))
	fi, _ := os.Stat(filepath.Join(out, "RECOVERYXLOG"))
	if !bytes.Equal(got, seg3) || fi.Mode().Perm() != 0o600 {
		t.Fatalf("fetched %d bytes, mode %v", len(got), fi.Mode())
	}
	if _, err := os.Stat(filepath.Join(out, "x")); err == nil {
		t.Fatal("a failed fetch wrote its destination")
	}
	ents, _ := os.ReadDir(out)
	if len(ents) != 2 {
		t.Fatalf("fetch left files behind: %v", ents)
	}

	// JSON documents.
	code, stdout, stderr := pgv(t, nil, append(args, "--output", "json", "wal", "push", p3)...)
	var pr struct {
		Name          string  `json:"name"`
		AlreadyStored bool    `json:"already_stored"`
		SegmentSize   uint64  `json:"segment_size"`
		Seconds       float64 `json:"seconds"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &pr) != nil || pr.Name != segN(3) || !pr.AlreadyStored || pr.SegmentSize != testSegSize {
		t.Fatalf("push json: %d %s %s", code, stdout, stderr)
	}
	code, stdout, stderr = pgv(t, nil, append(args, "--output", "json", "wal", "fetch", "--prefetch", "0", segN(3), filepath.Join(out, "again"))...)
	var fr struct {
		Name   string `json:"name"`
		Source string `json:"source"`
		Size   int64  `json:"size"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &fr) != nil || fr.Source != "repository" || fr.Size != testSegSize {
		t.Fatalf("fetch json: %d %s %s", code, stdout, stderr)
	}
}

// The restore_command runs as the postgres OS user, whose HOME may be
// unset: the spool then lives in a private folder of the temp dir, and a
// segment found there needs no password.
func TestWALFetchSpoolWithoutHomeOrPassword(t *testing.T) {
	dir, args := newRepo(t)
	pw := args[3]
	for _, no := range []uint64{5, 7} {
		p, _ := walFile(t, t.TempDir(), no, "")
		if code, _, stderr := pgv(t, nil, append(args, "wal", "push", p)...); code != 0 {
			t.Fatalf("push: %s", stderr)
		}
	}
	tmp := t.TempDir()
	env := map[string]string{"HOME": "", "XDG_CACHE_HOME": "", "PGVAULT_CACHE_DIR": "", "TMPDIR": tmp}
	noCache := []string{"--repo", dir, "--password-file", pw}
	out := t.TempDir()

	code, _, stderr := pgv(t, env, append(noCache, "wal", "fetch", "--prefetch", "0", segN(5), filepath.Join(out, "a"))...)
	if code != 0 {
		t.Fatalf("fetch without HOME: exit %d: %s", code, stderr)
	}
	spools, _ := filepath.Glob(filepath.Join(tmp, fmt.Sprintf("pgvault-cache-%d", os.Geteuid()), "*", "spool"))
	if len(spools) != 1 {
		t.Fatalf("no spool under the temp dir: %v", spools)
	}
	// Plant segment 6 as a prefetcher would, then fetch it with no password.
	_, seg6 := walFile(t, spools[0], 6, "")
	os.Remove(pw)
	code, stdout, stderr := pgv(t, env, append(noCache, "--output", "json", "wal", "fetch", "--prefetch", "0", segN(6), filepath.Join(out, "b"))...)
	if code != 0 || !strings.Contains(stdout, `"source": "spool"`) {
		t.Fatalf("spool hit without a password: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if got, _ := os.ReadFile(filepath.Join(out, "b")); !bytes.Equal(got, seg6) {
		t.Fatal("the spooled segment was not served as it was")
	}
	// So does the answer that a segment is not archived.
	code, _, stderr = pgv(t, env, append(noCache, "wal", "fetch", "--prefetch", "0", segN(8), filepath.Join(out, "c"))...)
	if code != 1 || !strings.Contains(oneLineErr(t, stderr), "not in the repository") {
		t.Fatalf("not archived, without a password: exit %d: %s", code, stderr)
	}
	// Downloading one does need it, and says so.
	code, _, stderr = pgv(t, env, append(noCache, "wal", "fetch", "--prefetch", "0", segN(7), filepath.Join(out, "c"))...)
	if code != 1 || !strings.Contains(oneLineErr(t, stderr), "password") {
		t.Fatalf("miss without a password: exit %d: %s", code, stderr)
	}
}

func TestWALCheck(t *testing.T) {
	_, args := newRepo(t)
	src := t.TempDir()
	for _, no := range []uint64{1, 2, 4, 5} {
		p, _ := walFile(t, src, no, "")
		if code, _, stderr := pgv(t, nil, append(args, "wal", "push", p)...); code != 0 {
			t.Fatalf("push: %s", stderr)
		}
	}
	code, stdout, stderr := pgv(t, nil, append(args, "wal", "check")...)
	if code != 3 || !strings.Contains(stdout, "missing: "+segN(3)) || !strings.Contains(oneLineErr(t, stderr), "1 of 5 segments missing") {
		t.Fatalf("check with a gap: exit %d\n%s\n%s", code, stdout, stderr)
	}
	code, stdout, _ = pgv(t, nil, append(args, "--output", "json", "wal", "check")...)
	var rep struct {
		OK               bool     `json:"ok"`
		From             string   `json:"from"`
		To               string   `json:"to"`
		Timeline         uint32   `json:"timeline"`
		SegmentsExpected int      `json:"segments_expected"`
		Missing          []string `json:"missing"`
		Start            string   `json:"start"`
	}
	if code != 3 || json.Unmarshal([]byte(stdout), &rep) != nil || rep.OK || rep.From != segN(1) || rep.To != segN(5) ||
		rep.Timeline != 1 || rep.SegmentsExpected != 5 || len(rep.Missing) != 1 || rep.Missing[0] != segN(3) || rep.Start != "oldest WAL" {
		t.Fatalf("check json: %d %s", code, stdout)
	}
	p, _ := walFile(t, src, 3, "")
	pgv(t, nil, append(args, "wal", "push", p)...)
	if code, stdout, stderr := pgv(t, nil, append(args, "wal", "check")...); code != 0 || !strings.Contains(stdout, "ok: no gaps") {
		t.Fatalf("check without gaps: exit %d\n%s\n%s", code, stdout, stderr)
	}
}

// With a HOME that cannot hold a cache, the spool and the index cache both
// move to the temp dir.
func TestWALFetchUnwritableHome(t *testing.T) {
	dir, args := newRepo(t)
	pw := args[3]
	p, data := walFile(t, t.TempDir(), 5, "")
	if code, _, stderr := pgv(t, nil, append(args, "wal", "push", p)...); code != 0 {
		t.Fatalf("push: %s", stderr)
	}
	tmp := t.TempDir()
	env := map[string]string{"HOME": "/proc/self/no-home", "XDG_CACHE_HOME": "", "PGVAULT_CACHE_DIR": "", "TMPDIR": tmp}
	dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	code, _, stderr := pgv(t, env, "--repo", dir, "--password-file", pw, "wal", "fetch", "--prefetch", "0", segN(5), dest)
	if code != 0 || stderr != "" {
		t.Fatalf("fetch with an unwritable HOME: exit %d: %s", code, stderr)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, data) {
		t.Fatal("wrong content")
	}
	root := filepath.Join(tmp, fmt.Sprintf("pgvault-cache-%d", os.Geteuid()))
	for _, sub := range []string{"spool", "index"} {
		if m, _ := filepath.Glob(filepath.Join(root, "*", sub)); len(m) != 1 {
			t.Errorf("no %s folder under %s", sub, root)
		}
	}
}

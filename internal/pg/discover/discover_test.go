package discover

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

func TestParsePostmasterPID(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want postmasterPID
		ok   bool
	}{
		{"pg15", "4242\n/var/lib/postgresql/15/main\n1733560000\n5432\n/var/run/postgresql\n*\n  5432001         0\nready   \n",
			postmasterPID{pid: 4242, port: 5432, socketDir: "/var/run/postgresql"}, true},
		{"no sockets", "7\n/d\n1\n6543\n\n127.0.0.1\n", postmasterPID{pid: 7, port: 6543}, true},
		{"starting, short", "7\n/d\n1\n", postmasterPID{}, false},
		{"bad port", "7\n/d\n1\nx\n/s\n", postmasterPID{}, false},
		{"port out of range", "7\n/d\n1\n70000\n/s\n", postmasterPID{}, false},
		{"empty", "", postmasterPID{}, false},
	} {
		got, ok := parsePostmasterPID(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseLsClusters(t *testing.T) {
	out := "15  main    5432 online postgres /var/lib/postgresql/15/main /var/log/postgresql/postgresql-15-main.log\n" +
		"16  reports 5433 down   postgres /srv/pg/16/reports/ /var/log/postgresql/postgresql-16-reports.log\n" +
		"garbage line\n"
	got := parseLsClusters(out)
	want := []lsCluster{{"15/main", "/var/lib/postgresql/15/main"}, {"16/reports", "/srv/pg/16/reports"}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

// fakeProc builds a /proc with the given processes: pid -> (comm, ppid,
// cwd).
func fakeProc(t *testing.T, procs map[int][3]string) string {
	t.Helper()
	root := t.TempDir()
	for pid, p := range procs {
		dir := filepath.Join(root, strconv.Itoa(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "comm"), []byte(p[0]+"\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "stat"), []byte(strconv.Itoa(pid)+" ("+p[0]+") S "+p[1]+" 1 1 0 -1\n"), 0o644)
		if p[2] != "" {
			os.Symlink(p[2], filepath.Join(dir, "cwd"))
		}
	}
	os.WriteFile(filepath.Join(root, "self"), nil, 0o644) // not a PID
	return root
}

func dataDir(t *testing.T, version string, pid string) string {
	t.Helper()
	d := t.TempDir()
	os.WriteFile(filepath.Join(d, "PG_VERSION"), []byte(version+"\n"), 0o600)
	if pid != "" {
		os.WriteFile(filepath.Join(d, "postmaster.pid"), []byte(pid), 0o600)
	}
	return d
}

func TestFind(t *testing.T) {
	self := strconv.Itoa(os.Getpid()) // a live PID for a running postmaster
	running := dataDir(t, "15", self+"\n/x\n1\n5499\n/tmp/sock\n")
	stale := dataDir(t, "16", "999999999\n/x\n1\n5500\n/tmp\n") // a postmaster.pid left by a crash
	ls := filepath.Join(t.TempDir(), "pg_lsclusters")
	os.WriteFile(ls, []byte("#!/bin/sh\necho '15 main 5499 online postgres "+running+" /log'\necho '16 old 5500 down postgres "+stale+" /log'\n"), 0o755)
	proc := fakeProc(t, map[int][3]string{
		100: {"postgres", "1", running},    // the postmaster
		101: {"postgres", "100", running},  // its checkpointer
		200: {"bash", "1", "/"},            // not postgres
		300: {"postgres", "1", "/nowhere"}, // cwd is not a data directory
	})
	got, err := Find(context.Background(), Options{Proc: proc, LsClusters: ls})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("found %+v, want the running cluster and the stopped one", got)
	}
	if c := got[0]; c.DataDir != running || !c.Running || c.Port != 5499 || c.SocketDir != "/tmp/sock" || c.Version != "15" || c.Name != "15/main" {
		t.Errorf("running cluster: %+v", c)
	}
	if c := got[1]; c.DataDir != stale || c.Running || c.Name != "16/old" {
		t.Errorf("stopped cluster (stale postmaster.pid): %+v", c)
	}
}

func TestInspectNotCluster(t *testing.T) {
	if _, err := Inspect(t.TempDir()); !errors.Is(err, ErrNotCluster) {
		t.Fatalf("err %v, want ErrNotCluster", err)
	}
}

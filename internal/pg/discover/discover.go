// Package discover finds the PostgreSQL clusters of this machine: the
// data directory given (PGDATA), the running postmasters (their working
// directory is their data directory), and Debian's pg_lsclusters for the
// clusters' names. What a running cluster listens on is read from its
// postmaster.pid, as pg_ctl reads it.
package discover

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Cluster is one PostgreSQL cluster of this machine.
type Cluster struct {
	DataDir string `json:"data_dir"`
	// Name is Debian's "15/main" when pg_lsclusters knows the cluster.
	Name    string `json:"name,omitempty"`
	Version string `json:"version"` // PG_VERSION: the major
	Running bool   `json:"running"`
	PID     int    `json:"pid,omitempty"`
	Port    int    `json:"port,omitempty"`
	// SocketDir is the first of unix_socket_directories ("" when the
	// server listens on none).
	SocketDir string `json:"socket_dir,omitempty"`
	UID       uint32 `json:"uid"`
	GID       uint32 `json:"gid"`
	Owner     string `json:"owner"`
}

// ErrNotCluster marks a folder that is not a PostgreSQL data directory.
var ErrNotCluster = errors.New("not a PostgreSQL data directory")

// Options say where to look.
type Options struct {
	// Proc is the proc file system's root ("": /proc).
	Proc string
	// LsClusters runs pg_lsclusters ("": found on PATH, skipped when
	// absent).
	LsClusters string
}

// Inspect reads the cluster in dataDir: its major, owner, and whether a
// postmaster runs on it (postmaster.pid naming a live process).
func Inspect(dataDir string) (Cluster, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return Cluster{}, err
	}
	ver, err := os.ReadFile(filepath.Join(abs, "PG_VERSION"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Cluster{}, fmt.Errorf("%s: %w (no PG_VERSION)", abs, ErrNotCluster)
		}
		return Cluster{}, fmt.Errorf("%s: %w", abs, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return Cluster{}, err
	}
	c := Cluster{DataDir: abs, Version: strings.TrimSpace(string(ver))}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		c.UID, c.GID = st.Uid, st.Gid
	}
	c.Owner = userName(c.UID)
	pid, err := os.ReadFile(filepath.Join(abs, "postmaster.pid"))
	if err == nil {
		if p, ok := parsePostmasterPID(string(pid)); ok && alive(p.pid) {
			c.Running, c.PID, c.Port, c.SocketDir = true, p.pid, p.port, p.socketDir
		}
	}
	return c, nil
}

type postmasterPID struct {
	pid       int
	port      int
	socketDir string
}

// parsePostmasterPID reads postmaster.pid: the PID, the data directory,
// the start time, the port, the first socket directory, then the listen
// address, the shared memory key and the status (src/include/utils/pidfile.h).
func parsePostmasterPID(s string) (postmasterPID, bool) {
	lines := strings.Split(s, "\n")
	if len(lines) < 5 {
		return postmasterPID{}, false
	}
	pid, err1 := strconv.Atoi(strings.TrimSpace(lines[0]))
	port, err2 := strconv.Atoi(strings.TrimSpace(lines[3]))
	if err1 != nil || err2 != nil || pid <= 0 || port <= 0 || port > 65535 {
		return postmasterPID{}, false
	}
	return postmasterPID{pid: pid, port: port, socketDir: strings.TrimSpace(lines[4])}, true
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Find lists the clusters of this machine: the running postmasters', then
// pg_lsclusters' (stopped ones too), each data directory once, by path.
func Find(ctx context.Context, o Options) ([]Cluster, error) {
	proc := o.Proc
	if proc == "" {
		proc = "/proc"
	}
	var out []Cluster
	seen := map[string]bool{}
	add := func(dir, name string) {
		if dir == "" {
			return
		}
		if seen[dir] {
			for i := range out {
				if out[i].DataDir == dir && out[i].Name == "" {
					out[i].Name = name
				}
			}
			return
		}
		c, err := Inspect(dir)
		if err != nil {
			return
		}
		seen[c.DataDir] = true
		c.Name = name
		out = append(out, c)
	}
	dirs, err := postmasterDirs(proc)
	if err != nil {
		return nil, err
	}
	for _, d := range dirs {
		add(d, "")
	}
	for _, l := range lsClusters(ctx, o.LsClusters) {
		add(l.dataDir, l.name)
	}
	return out, nil
}

// postmasterDirs lists the data directories of the running postmasters:
// processes named postgres (or postmaster) whose parent is not one; a
// postmaster's working directory is its data directory.
func postmasterDirs(proc string) ([]string, error) {
	ents, err := os.ReadDir(proc)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var dirs []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !isPostgres(proc, pid) {
			continue
		}
		if ppid, ok := parentOf(proc, pid); ok && isPostgres(proc, ppid) {
			continue // a backend or an auxiliary process
		}
		if d, err := os.Readlink(filepath.Join(proc, e.Name(), "cwd")); err == nil && !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	slices.Sort(dirs)
	return dirs, nil
}

func isPostgres(proc string, pid int) bool {
	b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "comm"))
	if err != nil {
		return false
	}
	comm := strings.TrimSpace(string(b))
	return comm == "postgres" || comm == "postmaster"
}

// parentOf reads the parent PID from /proc/PID/stat: the field after the
// parenthesised command name, which may itself hold spaces and ")".
func parentOf(proc string, pid int) (int, bool) {
	b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

type lsCluster struct{ name, dataDir string }

// lsClusters runs pg_lsclusters -h (Debian's postgresql-common): "Ver
// Cluster Port Status Owner Data-directory Log-file" per line. Nothing
// when the program is absent or fails: the running postmasters are found
// without it.
func lsClusters(ctx context.Context, prog string) []lsCluster {
	if prog == "" {
		p, err := exec.LookPath("pg_lsclusters")
		if err != nil {
			return nil
		}
		prog = p
	}
	out, err := exec.CommandContext(ctx, prog, "-h").Output()
	if err != nil {
		return nil
	}
	return parseLsClusters(string(out))
}

func parseLsClusters(s string) []lsCluster {
	var out []lsCluster
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || !filepath.IsAbs(f[5]) {
			continue
		}
		out = append(out, lsCluster{name: f[0] + "/" + f[1], dataDir: filepath.Clean(f[5])})
	}
	return out
}

func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return u.Username
	}
	return strconv.FormatUint(uint64(uid), 10)
}

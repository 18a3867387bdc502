package integration

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/pgtest"
)

// TestInitQuick: `pgvault init --quick`, run as root with no decisions but
// the folder, sets up a running cluster: the work runs as the cluster's
// owner, the repository and a password file only that user reads hold a
// first backup, the agent configuration it wrote starts an agent (as the
// owner, as its systemd unit would) that streams WAL; a second run and a
// cluster not ready for streaming are refused, the latter leaving nothing.
func TestInitQuick(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	c.CreateMarkers(t)
	dir := filepath.Join(pgtest.TempDir(t), "pgvault")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := l.Addr().String()
	l.Close()

	args := []string{"--output", "json", "init", "--quick", "--pgdata", c.DataDir(), "--dir", dir, "--site", "main", "--http", httpAddr}
	cmd := exec.Command(pgvaultBin, args...)
	cmd.Env = filteredEnv()
	out := succeeded(t, runCmd(t, cmd, args), args)
	var rep struct {
		Site   string `json:"site"`
		Backup struct {
			ID         string `json:"id"`
			Standalone bool   `json:"standalone"`
		} `json:"backup"`
		Config string   `json:"config"`
		Unit   string   `json:"systemd_unit"`
		Next   []string `json:"next"`
		Done   []struct{ What, Path string }
	}
	decodeJSON(t, out, &rep, args)
	if rep.Backup.ID == "" || !rep.Backup.Standalone || len(rep.Next) != 3 || rep.Config != filepath.Join(dir, "pgvault.yaml") {
		t.Fatalf("init --quick report: %s", out)
	}
	pw := filepath.Join(dir, "main.pass")
	dfi, err := os.Stat(c.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	clusterOwner := dfi.Sys().(*syscall.Stat_t).Uid
	for path, mode := range map[string]os.FileMode{pw: 0o600, rep.Config: 0o600, filepath.Join(dir, "repo", "config"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if owner := fi.Sys().(*syscall.Stat_t).Uid; fi.Mode().Perm() != mode || owner != clusterOwner {
			t.Errorf("%s: mode %v owner %d, want %v and the cluster's owner (%d)", path, fi.Mode().Perm(), owner, mode, clusterOwner)
		}
	}
	unit, err := os.ReadFile(rep.Unit)
	if err != nil || !strings.Contains(string(unit), "User=postgres") || !strings.Contains(string(unit), "agent --config "+rep.Config) {
		t.Fatalf("systemd unit %s: %v\n%s", rep.Unit, err, unit)
	}

	// The repository it made holds the backup, and that backup restores
	// without any WAL archive.
	v := &vault{t: t, repo: filepath.Join(dir, "repo"), base: dir, pwFile: pw,
		env: []string{"PGVAULT_REPO=" + filepath.Join(dir, "repo"), "PGVAULT_PASSWORD_FILE=" + pw, "PGVAULT_CACHE_DIR=" + filepath.Join(dir, "cache")}}
	var list []struct {
		ID         string `json:"id"`
		Standalone bool   `json:"standalone"`
	}
	v.json(&list, "list")
	if len(list) != 1 || list[0].ID != rep.Backup.ID {
		t.Fatalf("list: %+v", list)
	}

	// The configuration runs an agent as the cluster's owner: it streams.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agentCmd := pgtest.RunAsPostgres(ctx, pgvaultBin, "--log-level", "info", "agent", "--config", rep.Config)
	a := &agentProc{t: t, cmd: agentCmd, log: &lockedBuffer{}, conf: rep.Config, state: filepath.Join(dir, "state.json"), alerts: filepath.Join(dir, "alerts"), waitErr: make(chan error, 1)}
	agentCmd.Stdout, agentCmd.Stderr = a.log, a.log
	if err := agentCmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.waitErr <- agentCmd.Wait() }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", a.log)
		}
	})
	st := a.waitState("the agent to stream and check the WAL", 2*time.Minute, func(st agentState) bool {
		s := st.Sites["main"].Streamer
		return s != nil && s.Connected && st.Sites["main"].WALCheck.Last != nil
	})
	// The first backup carries its own WAL: no gap before the streamer
	// has filled its first segment.
	if !st.Sites["main"].WALCheck.OK {
		t.Fatalf("WAL check right after init: %+v", st.Sites["main"].WALCheck)
	}
	if code, _ := a.stop(); code != 0 {
		t.Fatalf("agent exit %d", code)
	}

	res := runCmd(t, exec.Command(pgvaultBin, args...), args)
	if res.code != 2 || !strings.Contains(res.stderr, "pgvault is set up there already") {
		t.Fatalf("second init: exit %d: %s", res.code, res.stderr)
	}

	// Not ready for streaming: the preflight's fixes, and nothing made.
	n := pgtest.Start(t, pgtest.Options{Settings: map[string]string{"wal_level": "minimal", "max_wal_senders": "0"}})
	other := filepath.Join(pgtest.TempDir(t), "pgvault")
	args = []string{"init", "--quick", "--pgdata", n.DataDir(), "--dir", other}
	res = runCmd(t, exec.Command(pgvaultBin, args...), args)
	if res.code != 3 || !strings.Contains(res.stderr, "nothing was changed") || !strings.Contains(res.stdout, "wal_level") {
		t.Fatalf("init on a cluster with wal_level minimal: exit %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Fatalf("a refused init left %s: %v", other, err)
	}
}

package verify

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// postmastersOf finds the processes running PostgreSQL on dataDir (its
// postmaster: "postgres -D dataDir ..."), by their command lines. A
// postmaster that pg_ctl start launched and an interruption cut short
// before it wrote postmaster.pid is found only so: pg_ctl gives it its
// own session, so it outlives pg_ctl.
func postmastersOf(dataDir string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
		if len(args) == 0 || filepath.Base(string(args[0])) != "postgres" {
			continue
		}
		for i := 1; i+1 < len(args); i++ {
			if string(args[i]) == "-D" && string(args[i+1]) == dataDir {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// quitPostmasters stops, as an immediate shutdown does (SIGQUIT), every
// postmaster running on dataDir, and waits up to a minute for them to end.
func quitPostmasters(dataDir string) {
	pids := postmastersOf(dataDir)
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGQUIT)
	}
	for deadline := time.Now().Add(time.Minute); len(pids) > 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		pids = postmastersOf(dataDir)
	}
}

package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// closeFUSEOnExec marks every /dev/fuse descriptor of this process
// close-on-exec. go-fuse (v2.12.1) leaves the descriptor of a direct mount
// (as root) inheritable: PostgreSQL started by verify --boot or a
// synthetic backup then holds the FUSE connection open, and when pgvault
// dies it waits forever, unkillable, for answers nobody will send, with
// the mount stuck under it. With the flag set, the connection ends with
// pgvault and those processes get ENOTCONN. The fork lock keeps an exec
// from another goroutine out while the flags change.
func closeFUSEOnExec() error {
	syscall.ForkLock.Lock()
	defer syscall.ForkLock.Unlock()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list this process's file descriptors: %w", err)
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || target != "/dev/fuse" {
			continue // closed meanwhile, or not FUSE
		}
		syscall.CloseOnExec(fd)
	}
	return nil
}

package fs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Sentinel errors of mounting and unmounting. Each error that wraps one
// names the path and the fix.
var (
	ErrNoFUSE          = errors.New("FUSE is not available")
	ErrMountpointBusy  = errors.New("mountpoint is busy")
	ErrMountpointStale = errors.New("mountpoint holds a stale FUSE mount")
	ErrNotMounted      = errors.New("not a mount point")
	ErrMountpoint      = errors.New("unusable mountpoint")
)

// MountOptions configure Mount.
type MountOptions struct {
	// ReadOnly mounts read-only (browse mode).
	ReadOnly bool
	// Timeout is the entry and attribute timeout for what does not change
	// behind the kernel's back (everything but the nodes that set their
	// own shorter timeouts). 0 means one hour.
	Timeout time.Duration
	// FsName names the mount in /proc/mounts and df.
	FsName string
	// MaxReadAhead is the largest kernel readahead request; 0 means 1 MiB.
	MaxReadAhead int
	// Debug logs every FUSE request.
	Debug bool
	// Logger receives go-fuse's diagnostics; nil discards them.
	Logger *slog.Logger
	// WritebackCache lets the kernel gather writes in its page cache and
	// send them later in large requests, instead of one request per
	// write(2) (PostgreSQL writes 8 KiB at a time). What was written
	// reaches the mount's files only on fsync, close or Sync, and the
	// kernel then serves no file by passthrough: for a private mount
	// whose writer is known (a replay), not for one an operator uses.
	WritebackCache bool
}

// Mounted is a live FUSE mount.
type Mounted struct {
	dir    string
	server *fuse.Server
	done   chan struct{}
}

// Mount serves root at dir until it is unmounted. The mount allows other
// users (PostgreSQL runs as its own user while the mount runs as root)
// and lets the kernel check permissions against the modes the nodes
// report (default_permissions), so nobody but the owner reads the files.
// Entry and attribute timeouts are always set: a non-nil go-fuse Options
// without them means zero timeouts and a GETATTR before every read.
func Mount(ctx context.Context, dir string, root gofs.InodeEmbedder, opts MountOptions) (*Mounted, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := CheckMountpoint(dir); err != nil {
		return nil, err
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = time.Hour
	}
	ra := opts.MaxReadAhead
	if ra == 0 {
		ra = 1 << 20
	}
	fsname := opts.FsName
	if fsname == "" {
		fsname = "pgvault"
	}
	mo := fuse.MountOptions{
		AllowOther:               true,
		Options:                  []string{"default_permissions"},
		FsName:                   fsname,
		Name:                     "pgvault",
		MaxWrite:                 1 << 20,
		MaxReadAhead:             ra,
		DisableXAttrs:            true,
		ExplicitDataCacheControl: true,
		// A symbolic link's target never changes in place (a new link is
		// a new inode); browse mode's latest link notifies when it moves.
		EnableSymlinkCaching: true,
		DirectMount:          os.Geteuid() == 0,
		Debug:                opts.Debug,
		MaxBackground:        64,
	}
	if opts.ReadOnly {
		mo.Options = append(mo.Options, "ro")
	}
	if opts.WritebackCache && !opts.ReadOnly {
		mo.ExtraCapabilities |= fuse.CAP_WRITEBACK_CACHE
	}
	var logger *log.Logger
	if opts.Logger != nil {
		logger = slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug)
		mo.Logger = logger
	}
	zero := time.Duration(0)
	gopts := &gofs.Options{
		MountOptions:    mo,
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &zero,
		NullPermissions: true,
		Logger:          logger,
	}
	// gofs.Mount, with every request served to its end (uninterruptible).
	server, err := fuse.NewServer(uninterruptible{gofs.NewNodeFS(root, gopts)}, dir, &gopts.MountOptions)
	if err != nil {
		return nil, mountError(dir, err)
	}
	if err := closeFUSEOnExec(); err != nil {
		server.Unmount()
		return nil, err
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		return nil, mountError(dir, err) // the serve loop ends by itself
	}
	m := &Mounted{dir: dir, server: server, done: make(chan struct{})}
	go func() {
		server.Wait()
		close(m.done)
	}()
	raiseReadAhead(dir, ra)
	return m, nil
}

// mountError explains a failed mount.
func mountError(dir string, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "fusermount") && (strings.Contains(msg, "not found") || strings.Contains(msg, "executable file")):
		return fmt.Errorf("%w: mount %s: fusermount3 not found: install fuse3 (apt-get install fuse3) or run as root", ErrNoFUSE, dir)
	case strings.Contains(msg, "user_allow_other"):
		return fmt.Errorf("%w: mount %s: add user_allow_other to /etc/fuse.conf or run as root", ErrNoFUSE, dir)
	case errors.Is(err, unix.EBUSY) || strings.Contains(msg, "busy"):
		return fmt.Errorf("%w: %s: unmount what is there first (pgvault umount %s)", ErrMountpointBusy, dir, dir)
	}
	return fmt.Errorf("mount %s: %w", dir, err)
}

// raiseReadAhead lets the kernel send reads as large as MaxReadAhead: the
// FUSE connection's backing device starts at 128 KiB. Best effort (needs
// root).
func raiseReadAhead(dir string, bytes int) {
	var st unix.Stat_t
	if unix.Stat(dir, &st) != nil {
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	os.WriteFile(p, []byte(strconv.Itoa(bytes/1024)), 0)
}

// Dir is the mountpoint.
func (m *Mounted) Dir() string { return m.dir }

// Sync sends every write the kernel still holds for the mount
// (WritebackCache) to its files, as syncfs(2) does.
func (m *Mounted) Sync() error {
	f, err := os.Open(m.dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", m.dir, err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("sync %s: %w", m.dir, err)
	}
	return nil
}

// Done is closed when the mount has gone (unmounted by anyone).
func (m *Mounted) Done() <-chan struct{} { return m.done }

// Unmount unmounts, retrying while the mountpoint is busy (EBUSY) until
// ctx ends. It returns ErrMountpointBusy if it never became free.
func (m *Mounted) Unmount(ctx context.Context) error {
	for {
		err := m.server.Unmount()
		if err == nil {
			<-m.done
			return nil
		}
		select {
		case <-m.done:
			return nil
		default:
		}
		if !errors.Is(err, unix.EBUSY) && !strings.Contains(err.Error(), "busy") {
			return fmt.Errorf("unmount %s: %w", m.dir, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s is still in use (stop PostgreSQL or whatever uses it; `fuser -vm %s` lists the processes)", ErrMountpointBusy, m.dir, m.dir)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// CheckMountpoint reports, as one clear error, why dir cannot take a new
// mount: FUSE missing, a stale or live mount there, not an empty folder.
func CheckMountpoint(dir string) error {
	if err := CheckFUSE(); err != nil {
		return err
	}
	return checkDir(dir)
}

// CheckFUSE reports, as one clear error, why this process cannot mount.
func CheckFUSE() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("%w: /dev/fuse is missing: load the module (modprobe fuse) or give the container the device (--device /dev/fuse)", ErrNoFUSE)
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			if _, err2 := exec.LookPath("fusermount"); err2 != nil {
				return fmt.Errorf("%w: fusermount3 not found: install fuse3 (apt-get install fuse3) or run as root", ErrNoFUSE)
			}
		}
	}
	return nil
}

// isStale reports whether dir is a FUSE mount whose server is gone. A
// stat may be answered from the kernel's attribute cache; statfs always
// goes to the server.
func isStale(dir string) bool {
	var st unix.Statfs_t
	return errors.Is(unix.Statfs(dir, &st), unix.ENOTCONN)
}

func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, unix.ENOTCONN) || (err == nil && isStale(dir)) {
		err = unix.ENOTCONN
		return fmt.Errorf("%w: %s (a pgvault mount was killed): run pgvault umount %s", ErrMountpointStale, dir, dir)
	}
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %s does not exist: create an empty folder first (mkdir %s)", ErrMountpoint, dir, dir)
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrMountpoint, dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a folder", ErrMountpoint, dir)
	}
	if mounted, _ := IsMountpoint(dir); mounted {
		return fmt.Errorf("%w: %s is already a mount point: unmount it first (pgvault umount %s)", ErrMountpointBusy, dir, dir)
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrMountpoint, dir, err)
	}
	defer f.Close()
	if names, _ := f.Readdirnames(1); len(names) > 0 {
		return fmt.Errorf("%w: %s is not empty (it holds %s): mount onto an empty folder", ErrMountpoint, dir, names[0])
	}
	return nil
}

// IsMountpoint reports whether dir is the mount point of a mount, from
// /proc/self/mountinfo (which, unlike stat, works for a dead FUSE mount).
func IsMountpoint(dir string) (bool, error) {
	dir = filepath.Clean(dir)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	return scanMountinfo(f, dir)
}

func scanMountinfo(r io.Reader, dir string) (bool, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMount(fields[4]) == dir {
			return true, nil
		}
	}
	return false, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// UnmountResult says how Unmount got rid of a mount.
type UnmountResult struct {
	Stale  bool   `json:"stale"`  // the mount's server was gone
	Lazy   bool   `json:"lazy"`   // detached (umount -l) because it stayed busy
	Method string `json:"method"` // "umount", "fusermount3" or "umount -l"
}

// Unmount removes the mount at dir, a live one or a stale one left by a
// killed server ("Transport endpoint is not connected"). It retries while
// the mount is busy until ctx ends; then, for a stale mount or if lazy is
// set, it detaches it (umount -l), else it fails with ErrMountpointBusy.
func Unmount(ctx context.Context, dir string, lazy bool) (*UnmountResult, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	mounted, err := IsMountpoint(dir)
	if err != nil {
		return nil, err
	}
	if !mounted {
		return nil, fmt.Errorf("%w: nothing is mounted at %s", ErrNotMounted, dir)
	}
	res := &UnmountResult{Stale: isStale(dir)}
	for {
		err := unmountOnce(dir, res)
		if err == nil {
			return res, nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("unmount %s: %w", dir, err)
		}
		// A stale mount serves nothing: processes still holding files in
		// it only get errors, so waiting for them gains nothing.
		done := res.Stale
		if !done {
			select {
			case <-ctx.Done():
				done = true
			case <-time.After(200 * time.Millisecond):
			}
		}
		if done {
			if res.Stale || lazy {
				if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
					if out, lerr := exec.Command("umount", "-l", dir).CombinedOutput(); lerr != nil {
						return nil, fmt.Errorf("umount -l %s: %v: %s", dir, lerr, strings.TrimSpace(string(out)))
					}
				}
				res.Lazy, res.Method = true, "umount -l"
				return res, nil
			}
			return nil, fmt.Errorf("%w: %s is still in use (stop PostgreSQL or whatever uses it; `fuser -vm %s` lists the processes; --lazy detaches it anyway)", ErrMountpointBusy, dir, dir)
		}
	}
}

func unmountOnce(dir string, res *UnmountResult) error {
	if os.Geteuid() == 0 {
		res.Method = "umount"
		return unix.Unmount(dir, 0)
	}
	res.Method = "fusermount3"
	prog := "fusermount3"
	if _, err := exec.LookPath(prog); err != nil {
		prog = "fusermount"
	}
	out, err := exec.Command(prog, "-u", dir).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "busy") {
			return unix.EBUSY
		}
		return fmt.Errorf("%s -u: %v: %s", prog, err, strings.TrimSpace(string(out)))
	}
	return nil
}

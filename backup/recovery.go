package backup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/pgvault/pgvault/internal/atomicfile"
	"github.com/pgvault/pgvault/internal/pg/wal"
)

// RecoveryResult says what WriteRecoveryConfig wrote.
type RecoveryResult struct {
	// SignalFile is the path of recovery.signal or standby.signal.
	SignalFile string
	// AutoConf is the path of postgresql.auto.conf; Settings are the lines
	// appended to it, and Disabled how many earlier recovery settings in
	// it were commented out.
	AutoConf string
	Settings []wal.Setting
	Disabled int
	// Warnings are settings elsewhere that change what recovery does
	// (postgresql.conf setting a recovery parameter pgvault did not set).
	Warnings []string
}

// WriteRecoveryConfig configures the restored data directory dataDir for
// recovery: postgresql.auto.conf gets c's settings appended (after
// commenting out every recovery setting already in it, see
// wal.ApplyRecoveryConfig), replaced atomically, and the signal file is
// created (the other one removed). Files are given the data directory's
// owner when running as root. note heads the appended lines.
func WriteRecoveryConfig(dataDir string, c wal.RecoveryConfig, note string) (*RecoveryResult, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	st, err := os.Stat(dataDir)
	if err != nil {
		return nil, fmt.Errorf("recovery configuration: %w", err)
	}
	// Durable (synced, folder synced) and owned by the data directory's
	// owner when we may give files away (running as root).
	write := atomicfile.Options{Perm: 0o600}
	if uid, gid := ownerOf(st); os.Geteuid() == 0 && uid >= 0 {
		write.Owner = &atomicfile.Owner{UID: uid, GID: gid}
	}
	res := &RecoveryResult{
		SignalFile: filepath.Join(dataDir, c.SignalFile()),
		AutoConf:   filepath.Join(dataDir, "postgresql.auto.conf"),
		Settings:   c.Settings(),
	}
	old, err := os.ReadFile(res.AutoConf)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("recovery configuration: %w", err)
	}
	updated := wal.ApplyRecoveryConfig(old, c, note)
	res.Disabled = disabledLines(updated) - disabledLines(old)
	if err := atomicfile.WriteFile(res.AutoConf, updated, write); err != nil {
		return nil, fmt.Errorf("recovery configuration: %w", err)
	}
	other := filepath.Join(dataDir, wal.StandbySignalFile)
	if c.Standby {
		other = filepath.Join(dataDir, wal.RecoverySignalFile)
	}
	if err := os.Remove(other); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("recovery configuration: %w", err)
	}
	// Writing the signal file syncs the folder, which makes the removal
	// of the other one durable too.
	if err := atomicfile.WriteFile(res.SignalFile, nil, write); err != nil {
		return nil, fmt.Errorf("recovery configuration: %w", err)
	}
	res.Warnings = confConflicts(filepath.Join(dataDir, "postgresql.conf"), res.Settings)
	return res, nil
}

// disabledLines counts the lines wal.ApplyRecoveryConfig commented out.
func disabledLines(conf []byte) int {
	n := 0
	for _, line := range bytes.Split(conf, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("# disabled by pgvault restore: ")) {
			n++
		}
	}
	return n
}

// confConflicts lists recovery settings in postgresql.conf that the
// appended settings do not override: they still apply (a second
// recovery target makes PostgreSQL refuse to start).
func confConflicts(path string, written []wal.Setting) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	set := map[string]bool{}
	for _, s := range written {
		set[s.Name] = true
	}
	var out []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		name, ok := confSettingName(line)
		if !ok || set[name] || !slices.Contains(wal.RecoveryParams, name) {
			continue
		}
		out = append(out, fmt.Sprintf("%s line %d sets %s, which still applies: %s", path, n, name, strings.TrimSpace(line)))
	}
	return out
}

// confSettingName returns the parameter a postgresql.conf line sets.
func confSettingName(line string) (string, bool) {
	s := strings.TrimSpace(line)
	if s == "" || s[0] == '#' {
		return "", false
	}
	end := strings.IndexAny(s, " \t=")
	if end <= 0 {
		return "", false
	}
	rest := strings.TrimLeft(s[end:], " \t")
	if rest == "" || rest[0] == '#' {
		return "", false
	}
	return strings.ToLower(s[:end]), true
}

func ownerOf(fi fs.FileInfo) (uid, gid int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return -1, -1
}

// DataDirOwner returns the owner of a data directory: the OS user
// PostgreSQL runs as on it.
func DataDirOwner(dataDir string) (uid, gid uint32, err error) {
	st, err := os.Stat(dataDir)
	if err != nil {
		return 0, 0, err
	}
	u, g := ownerOf(st)
	if u < 0 {
		return 0, 0, fmt.Errorf("%s: cannot tell its owner", dataDir)
	}
	return uint32(u), uint32(g), nil
}

// CheckReadableBy reports, as an error saying why, whether the OS user
// uid (primary group gid, plus the groups the user database lists for
// it) cannot read the file at path: every folder above it must be
// searchable and the file readable by that user, judging by owners and
// mode bits (ACLs are not consulted). root reads everything.
func CheckReadableBy(path string, uid, gid uint32) error {
	return checkAccessBy(path, uid, gid, 0o4)
}

// CheckWritableBy is CheckReadableBy for a folder the user must create
// files in: the folder, or the nearest one above it that exists (where
// it would be created), must be writable and searchable.
func CheckWritableBy(dir string, uid, gid uint32) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for {
		if _, err := os.Stat(abs); err == nil || abs == filepath.Dir(abs) {
			break
		}
		abs = filepath.Dir(abs)
	}
	return checkAccessBy(abs, uid, gid, 0o3)
}

func checkAccessBy(path string, uid, gid uint32, bits fs.FileMode) error {
	if uid == 0 {
		return nil
	}
	groups := map[uint32]bool{gid: true}
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		if ids, err := u.GroupIds(); err == nil {
			for _, id := range ids {
				if g, err := strconv.ParseUint(id, 10, 32); err == nil {
					groups[uint32(g)] = true
				}
			}
		}
	}
	allowed := func(fi fs.FileInfo, bit fs.FileMode) bool {
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return true
		}
		perm := fi.Mode().Perm()
		switch {
		case st.Uid == uid:
			return perm&(bit<<6) == bit<<6
		case groups[st.Gid]:
			return perm&(bit<<3) == bit<<3
		default:
			return perm&bit == bit
		}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return err
	}
	if !allowed(fi, bits) {
		what := "readable"
		if bits&0o2 != 0 {
			what = "writable"
		}
		return fmt.Errorf("%s (owner uid %d, mode %v) is not %s by uid %d", abs, ownerUID(fi), fi.Mode().Perm(), what, uid)
	}
	for dir := filepath.Dir(abs); ; dir = filepath.Dir(dir) {
		di, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if !allowed(di, 0o1) {
			return fmt.Errorf("folder %s (owner uid %d, mode %v) cannot be entered by uid %d", dir, ownerUID(di), di.Mode().Perm(), uid)
		}
		if dir == filepath.Dir(dir) {
			return nil
		}
	}
}

func ownerUID(fi fs.FileInfo) int {
	u, _ := ownerOf(fi)
	return u
}

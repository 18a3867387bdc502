package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgvault/pgvault/repo"
)

// RestoreOptions configure Restore.
type RestoreOptions struct {
	// Target is the data directory to create; it must not exist or be empty.
	Target string
	// TablespaceMap maps a tablespace's original location to a new one
	// (like pg_basebackup --tablespace-mapping). Unmapped tablespaces go
	// back to their original locations, which must not exist or be empty.
	TablespaceMap map[string]string
	// Parallel is how many files are fetched at once; 0 means 8.
	Parallel int
	// Progress, if set, is called with bytes written so far and the total.
	Progress func(done, total int64)
	// Delta restores into an existing data directory of the same cluster
	// (PostgreSQL stopped), rewriting only the chunks whose content differs
	// and removing everything the backup does not hold.
	Delta bool
}

// RestoreResult summarises a restore.
type RestoreResult struct {
	Files       int64
	Bytes       int64
	Duration    time.Duration
	Tablespaces map[uint32]string // where each tablespace went
	// Delta reports what a delta restore compared and changed (nil for a
	// restore into an empty directory).
	Delta *DeltaResult
}

// ErrTargetNotEmpty is returned when a restore would overwrite something.
var ErrTargetNotEmpty = errors.New("target is not empty")

// Restore copies a base backup out of the repository into a data
// directory (and its tablespaces), fetching files in parallel, with their
// modes, owners (when running as root) and times, and PostgreSQL's
// backup_manifest so that pg_verifybackup can check the result.
func Restore(ctx context.Context, r *repo.Repository, s *repo.Snapshot, opts RestoreOptions) (*RestoreResult, error) {
	started := time.Now()
	info, err := InfoOf(s)
	if err != nil {
		return nil, err
	}
	if opts.Target == "" {
		return nil, errors.New("restore: no target directory")
	}
	target, err := filepath.Abs(opts.Target)
	if err != nil {
		return nil, err
	}
	locations, err := tablespaceLocations(info, opts.TablespaceMap)
	if err != nil {
		return nil, err
	}
	if opts.Delta {
		return restoreDelta(ctx, r, s, info, target, locations, opts, started)
	}
	for _, dir := range append([]string{target}, values(locations)...) {
		if err := ensureEmptyDir(dir); err != nil {
			return nil, err
		}
	}
	res := &RestoreResult{Tablespaces: locations}

	type fileJob struct {
		dst  string
		node repo.Node
	}
	var files []fileJob
	var dirs []struct {
		dst  string
		node repo.Node
	}
	var total int64
	err = r.Walk(ctx, s.Root, func(p string, n *repo.Node) error {
		dst, isTablespaceRoot := placePath(target, locations, p)
		switch n.Type {
		case repo.NodeDir:
			if isTablespaceRoot {
				link := filepath.Join(target, filepath.FromSlash(p))
				if err := os.Symlink(dst, link); err != nil {
					return fmt.Errorf("restore: tablespace link %s: %w", link, err)
				}
			}
			if err := os.MkdirAll(dst, 0o700); err != nil {
				return fmt.Errorf("restore: %w", err)
			}
			dirs = append(dirs, struct {
				dst  string
				node repo.Node
			}{dst, *n})
		case repo.NodeSymlink:
			if err := os.Symlink(n.Target, dst); err != nil {
				return fmt.Errorf("restore: %w", err)
			}
			lchown(dst, n)
		case repo.NodeFile:
			files = append(files, fileJob{dst, *n})
			total += n.Size
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	overrides, err := tablespaceOverrides(ctx, r, s, info, target, locations)
	if err != nil {
		return nil, err
	}
	par := opts.Parallel
	if par <= 0 {
		par = 8
	}
	var done atomic.Int64
	err = forEach(ctx, par, files, func(ctx context.Context, j fileJob) error {
		n, err := restoreFile(ctx, r, j.dst, &j.node, overrides[j.dst])
		done.Add(n)
		if opts.Progress != nil {
			opts.Progress(done.Load(), total)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	// Directory modes and times last: writing files changed the times.
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		applyMeta(d.dst, &d.node)
	}
	root := s.RootNode
	applyMeta(target, &root)
	for _, dir := range append([]string{target}, values(locations)...) {
		if err := syncFS(dir); err != nil {
			return nil, fmt.Errorf("restore: sync %s: %w", dir, err)
		}
	}
	res.Files, res.Bytes, res.Duration = int64(len(files)), done.Load(), time.Since(started)
	return res, nil
}

// tablespaceLocations says where each tablespace of a backup goes: its
// original location, or where mapping moves it.
func tablespaceLocations(info *Info, mapping map[string]string) (map[uint32]string, error) {
	locations := map[uint32]string{}
	for _, ts := range info.Tablespaces {
		loc := ts.Location
		if m, ok := mapping[filepath.Clean(loc)]; ok {
			loc = m
		}
		locations[ts.OID] = filepath.Clean(loc)
	}
	for old := range mapping {
		found := false
		for _, ts := range info.Tablespaces {
			found = found || filepath.Clean(ts.Location) == old
		}
		if !found {
			return nil, fmt.Errorf("restore: --tablespace-map %s: the backup has no tablespace there", old)
		}
	}
	return locations, nil
}

// placePath maps a snapshot path to where it goes on disk; tablespaceRoot
// is set for "pg_tblspc/<oid>" of a known tablespace, which becomes a
// symbolic link in the data directory to the tablespace's location.
func placePath(target string, locations map[uint32]string, p string) (dst string, tablespaceRoot bool) {
	if rest, ok := strings.CutPrefix(p, "pg_tblspc/"); ok {
		oidStr, sub, _ := strings.Cut(rest, "/")
		oid, err := strconv.ParseUint(oidStr, 10, 32)
		if err == nil {
			if loc, ok := locations[uint32(oid)]; ok {
				if sub == "" {
					return loc, true
				}
				return filepath.Join(loc, filepath.FromSlash(sub)), false
			}
		}
	}
	return filepath.Join(target, filepath.FromSlash(p)), false
}

func values(m map[uint32]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// CheckTarget reports, without changing anything, why Restore with opts
// would refuse to write the backup described by info (nil: check only the
// data directory itself): for a plain restore the data directory and the
// tablespace locations must be missing or empty; for a delta restore the
// data directory must not have a live postmaster and, if not empty, must
// be a data directory of the backup's cluster.
func CheckTarget(opts RestoreOptions, info *Info) error {
	if opts.Target == "" {
		return errors.New("restore: no target directory")
	}
	target, err := filepath.Abs(opts.Target)
	if err != nil {
		return err
	}
	if opts.Delta {
		if info == nil {
			info = &Info{}
		}
		return checkDeltaTarget(target, info)
	}
	dirs := []string{target}
	if info != nil {
		locations, err := tablespaceLocations(info, opts.TablespaceMap)
		if err != nil {
			return err
		}
		dirs = append(dirs, values(locations)...)
	}
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return fmt.Errorf("restore: %w", err)
		case len(entries) > 0:
			return fmt.Errorf("%w: %s holds %d entries (restore into an empty or new directory, or use --delta to bring an existing data directory of this cluster up to the backup)", ErrTargetNotEmpty, dir, len(entries))
		}
	}
	return nil
}

// ensureEmptyDir creates dir, or accepts it if it exists and is empty.
func ensureEmptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("restore: create %s: %w", dir, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("restore: %w", err)
	case len(entries) > 0:
		return fmt.Errorf("%w: %s holds %d entries (restore into an empty or new directory)", ErrTargetNotEmpty, dir, len(entries))
	}
	return nil
}

// tablespaceOverrides returns replacement contents for files that must
// change because tablespaces moved: tablespace_map (PostgreSQL recreates
// the pg_tblspc links from it at startup) and backup_manifest (so that
// pg_verifybackup still accepts the changed tablespace_map).
func tablespaceOverrides(ctx context.Context, r *repo.Repository, s *repo.Snapshot, info *Info, target string, locations map[uint32]string) (map[string][]byte, error) {
	if info.TablespaceMap == "" {
		return nil, nil
	}
	newMap := rewriteTablespaceMap(info.TablespaceMap, locations)
	if newMap == info.TablespaceMap {
		return nil, nil
	}
	f, err := r.OpenFile(ctx, s, "backup_manifest")
	if err != nil {
		return nil, err
	}
	var manifest bytes.Buffer
	if _, err := f.WriteTo(ctx, &manifest, 4); err != nil {
		return nil, err
	}
	patched, err := PatchManifest(manifest.Bytes(), "tablespace_map", []byte(newMap))
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	return map[string][]byte{
		filepath.Join(target, "tablespace_map"):  []byte(newMap),
		filepath.Join(target, "backup_manifest"): patched,
	}, nil
}

// restoreFile writes one file, or override instead of its stored content.
func restoreFile(ctx context.Context, r *repo.Repository, dst string, n *repo.Node, override []byte) (int64, error) {
	f, err := r.OpenNode(ctx, n)
	if err != nil {
		return 0, err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	var written int64
	if override != nil {
		var nw int
		nw, err = out.Write(override)
		written = int64(nw)
	} else {
		// Chunks are written as they come (128 KiB for relation files):
		// large enough that a buffer would only add a copy.
		written, err = f.WriteTo(ctx, &earlyWriteback{f: out}, 4)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return written, fmt.Errorf("restore %s: %w", dst, err)
	}
	applyMeta(dst, n)
	return written, nil
}

// rewriteTablespaceMap replaces each tablespace's path with where it was
// restored. Lines are "<oid> <path>"; the path is the rest of the line.
func rewriteTablespaceMap(text string, locations map[uint32]string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(text, "\n") {
		oidStr, _, ok := strings.Cut(strings.TrimRight(line, "\n"), " ")
		oid, err := strconv.ParseUint(oidStr, 10, 32)
		if loc, known := locations[uint32(oid)]; ok && err == nil && known {
			b.WriteString(oidStr + " " + loc)
			if strings.HasSuffix(line, "\n") {
				b.WriteString("\n")
			}
			continue
		}
		b.WriteString(line)
	}
	return b.String()
}

func applyMeta(p string, n *repo.Node) {
	lchown(p, n)
	os.Chmod(p, n.Mode.Perm()|n.Mode&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky))
	os.Chtimes(p, n.ModTime, n.ModTime)
}

// lchown restores owners only when we may (running as root).
func lchown(p string, n *repo.Node) {
	if os.Geteuid() == 0 {
		os.Lchown(p, int(n.UID), int(n.GID))
	}
}

// writebackEvery is how much a restore writes to a file before it asks the
// kernel to start writing those bytes to disk.
const writebackEvery = 8 << 20

// earlyWriteback writes to a file and starts the kernel's writeback of
// every writebackEvery bytes as it goes (sync_file_range WRITE, which
// does not wait), so that disk writes overlap with fetching and
// decompressing, and the final syncfs waits for the last few MiB instead
// of the whole restore: the kernel alone would start only when dirty
// pages pass dirty_background_ratio (10% of memory) or grow 30 s old.
type earlyWriteback struct {
	f       *os.File
	off     int64 // bytes written
	started int64 // bytes whose writeback was started
}

func (w *earlyWriteback) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.started >= writebackEvery {
		// Only a hint: a failure leaves the bytes to syncfs.
		unix.SyncFileRange(int(w.f.Fd()), w.started, w.off-w.started, unix.SYNC_FILE_RANGE_WRITE)
		w.started = w.off
	}
	return n, err
}

// syncFS flushes the filesystem holding dir: one syscall instead of an
// fsync per file.
func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

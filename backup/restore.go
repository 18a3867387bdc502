package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
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
	// IncludeDatabases, if any, restores only these databases' relation
	// files (and the system databases'); every other database's relation
	// files become sparse files of their size, all zeros, which recovery
	// accepts (full-page images rebuild what WAL touches) and DROP
	// DATABASE removes. Not with Delta.
	IncludeDatabases []string
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
	// Excluded are the databases a partial restore left as empty files.
	Excluded []Database
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
	if opts.Delta && len(opts.IncludeDatabases) > 0 {
		return nil, errors.New("restore: a delta restore rewrites the whole cluster: it takes no database list")
	}
	excluded, err := ExcludedDatabases(info, opts.IncludeDatabases)
	if err != nil {
		return nil, err
	}
	// The data directory, then the tablespaces in a fixed order.
	roots := append([]string{target}, slices.Sorted(maps.Values(locations))...)
	var (
		place restorer
		delta *deltaRun
	)
	if opts.Delta {
		if delta, err = newDeltaRun(r, target, info, roots); err != nil {
			return nil, err
		}
		place = delta
	} else {
		for _, dir := range roots {
			if err := ensureEmptyDir(dir); err != nil {
				return nil, err
			}
		}
		place = plainRestore{r: r}
	}
	files, written, err := restoreTree(ctx, r, s, info, target, locations, roots, opts, excluded, place)
	if err != nil {
		return nil, err
	}
	res := &RestoreResult{Files: files, Bytes: written, Tablespaces: locations}
	for _, d := range info.Databases {
		if excluded[d.OID] {
			res.Excluded = append(res.Excluded, d)
		}
	}
	if delta != nil {
		res.Delta = delta.result()
		res.Bytes = res.Delta.BytesWritten
	}
	res.Duration = time.Since(started)
	return res, nil
}

// restorer is what a restore does to put each entry of a snapshot on
// disk; restoreTree walks the snapshot and calls it. plainRestore creates
// everything in empty folders; a delta restore (deltaRun) brings what is
// already there to the backup's content.
type restorer interface {
	// dir makes dst a folder. Called during the walk, parents first.
	dir(dst string) error
	// symlink makes link a symbolic link to target: a symbolic link of
	// the backup, or pg_tblspc/<oid> pointing to its tablespace. Called
	// during the walk.
	symlink(link, target string) error
	// file gives j.dst the content of j.node, or override instead when
	// it is not nil, with the node's metadata. Called concurrently, after
	// the walk; it returns the bytes to count as progress.
	file(ctx context.Context, j fileJob, override []byte) (int64, error)
	// finish runs once every file is written, before folder modes and
	// times are set; files are all of them.
	finish(roots []string, files []fileJob) error
}

// fileJob is one file of the snapshot to restore.
type fileJob struct {
	path string // in the snapshot
	dst  string
	node repo.Node
	// empty: a relation file of a database a partial restore leaves out,
	// written as a sparse file of its size.
	empty bool
}

// restoreTree puts snapshot s on disk through place: one walk that makes
// folders and symbolic links in order (pg_tblspc/<oid> of a known
// tablespace becomes a link to its location), then every file,
// opts.Parallel at a time (tablespace_map and backup_manifest rewritten
// when tablespaces moved; the first error cancels the rest), then
// place.finish, then folder modes and times (writing files changed the
// times), and a sync of each root's file system. It returns the number of
// files and the progress bytes place.file reported.
func restoreTree(ctx context.Context, r *repo.Repository, s *repo.Snapshot, info *Info, target string,
	locations map[uint32]string, roots []string, opts RestoreOptions, excluded map[uint32]bool, place restorer) (files, progress int64, err error) {
	type dirJob struct {
		dst  string
		node repo.Node
	}
	var (
		jobs  []fileJob
		dirs  []dirJob
		total int64
	)
	err = r.Walk(ctx, s.Root, func(p string, n *repo.Node) error {
		dst, isTablespaceRoot := placePath(target, locations, p)
		switch n.Type {
		case repo.NodeDir:
			if isTablespaceRoot {
				if err := place.symlink(filepath.Join(target, filepath.FromSlash(p)), dst); err != nil {
					return err
				}
			}
			if err := place.dir(dst); err != nil {
				return err
			}
			dirs = append(dirs, dirJob{dst, *n})
		case repo.NodeSymlink:
			if err := place.symlink(dst, n.Target); err != nil {
				return err
			}
			lchown(dst, n)
		case repo.NodeFile:
			j := fileJob{path: p, dst: dst, node: *n, empty: excludedRelationFile(p, excluded)}
			jobs = append(jobs, j)
			if !j.empty {
				total += n.Size
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	overrides, err := tablespaceOverrides(ctx, r, s, info, target, locations)
	if err != nil {
		return 0, 0, err
	}

	par := opts.Parallel
	if par <= 0 {
		par = 8
	}
	var done atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(par)
	for _, j := range jobs {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err // another file failed
			}
			n, err := place.file(gctx, j, overrides[j.dst])
			done.Add(n)
			if opts.Progress != nil {
				opts.Progress(done.Load(), total)
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	if err := place.finish(roots, jobs); err != nil {
		return 0, 0, err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		applyMeta(dirs[i].dst, &dirs[i].node)
	}
	root := s.RootNode
	applyMeta(target, &root)
	for _, dir := range roots {
		if err := syncFS(dir); err != nil {
			return 0, 0, fmt.Errorf("restore: sync %s: %w", dir, err)
		}
	}
	return int64(len(jobs)), done.Load(), nil
}

// plainRestore creates the snapshot's entries in empty folders.
type plainRestore struct{ r *repo.Repository }

var _ restorer = plainRestore{}

func (p plainRestore) dir(dst string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

func (p plainRestore) symlink(link, target string) error {
	if err := os.Symlink(target, link); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

func (p plainRestore) file(ctx context.Context, j fileJob, override []byte) (int64, error) {
	if j.empty {
		return 0, emptyFile(j.dst, &j.node)
	}
	return restoreFile(ctx, p.r, j.dst, &j.node, override)
}

// emptyFile writes a sparse file of n's size: all zeros, no blocks.
func emptyFile(dst string, n *repo.Node) error {
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	err = out.Truncate(n.Size)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("restore %s: %w", dst, err)
	}
	applyMeta(dst, n)
	return nil
}

func (p plainRestore) finish([]string, []fileJob) error { return nil }

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
		if !slices.ContainsFunc(info.Tablespaces, func(ts Tablespace) bool { return filepath.Clean(ts.Location) == old }) {
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
		dirs = append(dirs, slices.Sorted(maps.Values(locations))...)
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

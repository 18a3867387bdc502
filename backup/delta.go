package backup

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/pgvault/pgvault/repo"
)

// DeltaResult reports what a delta restore compared and changed.
type DeltaResult struct {
	// Checked is the number of files of the backup compared with the
	// data directory; Unchanged of them were already right, Rewritten had
	// chunks rewritten or a size fixed, Created did not exist (or were not
	// regular files) and were written whole.
	Checked, Unchanged, Rewritten, Created int64
	// Removed counts paths deleted because the backup does not hold them
	// (a removed folder counts once).
	Removed int64
	// ChunksWritten and BytesWritten count what was written; BytesRead is
	// how much existing data was read to compare.
	ChunksWritten int64
	BytesWritten  int64
	BytesRead     int64
	// RewrittenFiles and CreatedFiles list snapshot paths, RemovedPaths
	// paths on disk, all sorted.
	RewrittenFiles []string
	CreatedFiles   []string
	RemovedPaths   []string
}

// ErrPostgresRunning: a delta restore found a live postmaster on the data
// directory.
var ErrPostgresRunning = errors.New("PostgreSQL is running on the target")

// ErrNotDataDir: a delta restore target holds files but is not a data
// directory of the backup's cluster.
var ErrNotDataDir = errors.New("the target is not a data directory of this cluster")

// deltaRun is a delta restore: it brings an existing data directory (and
// its tablespaces) to the content of a snapshot. For every file of the
// backup it compares the file on disk chunk by chunk, at the backup's own
// chunk boundaries, by chunk ID (the repository's keyed hash of the
// bytes), and writes only the chunks that differ, at their offsets, then
// truncates to the backup's size; files and folders the backup does not
// hold are removed (finish).
type deltaRun struct {
	r        *repo.Repository
	bufs     sync.Pool // *[]byte for reading what is on disk
	mu       sync.Mutex
	res      *DeltaResult
	expected map[string]bool // every path the backup puts on disk
	links    map[string]bool // expected symbolic links (not descended into)
}

var _ restorer = (*deltaRun)(nil)

// newDeltaRun refuses a target on which a postmaster runs, and a
// non-empty one that is not a data directory of the backup's cluster (no
// PG_VERSION, or another system identifier in global/pg_control), so that
// a wrong --target is never wiped. It creates the tablespace folders.
// roots are the data directory, then the tablespace locations.
func newDeltaRun(r *repo.Repository, target string, info *Info, roots []string) (*deltaRun, error) {
	if err := checkDeltaTarget(target, info); err != nil {
		return nil, err
	}
	d := &deltaRun{r: r, res: &DeltaResult{}, expected: map[string]bool{target: true}, links: map[string]bool{}}
	d.bufs.New = func() any { b := make([]byte, 0, 1<<20); return &b }
	for _, loc := range roots[1:] {
		if err := os.MkdirAll(loc, 0o700); err != nil {
			return nil, fmt.Errorf("restore: create tablespace folder %s: %w", loc, err)
		}
		d.expected[loc] = true
	}
	return d, nil
}

func (d *deltaRun) dir(dst string) error {
	d.expected[dst] = true
	return d.ensureDir(dst)
}

func (d *deltaRun) symlink(link, target string) error {
	d.expected[link] = true
	d.links[link] = true
	return d.ensureSymlink(link, target)
}

func (d *deltaRun) file(ctx context.Context, j fileJob, override []byte) (int64, error) {
	buf := d.bufs.Get().(*[]byte)
	defer d.bufs.Put(buf)
	// Progress counts what was compared, not what was written.
	return j.node.Size, d.update(ctx, j.path, j.dst, &j.node, override, buf)
}

// finish removes, below every root, what the backup does not hold.
func (d *deltaRun) finish(roots []string, files []fileJob) error {
	for _, j := range files {
		d.expected[j.dst] = true
	}
	for _, root := range roots {
		if err := d.removeStale(root); err != nil {
			return err
		}
	}
	return nil
}

// result is what the run compared and changed, its lists sorted.
func (d *deltaRun) result() *DeltaResult {
	res := d.res
	slices.Sort(res.RewrittenFiles)
	slices.Sort(res.CreatedFiles)
	slices.Sort(res.RemovedPaths)
	return res
}

// checkDeltaTarget refuses a target PostgreSQL runs on, and a non-empty
// one that is not a data directory of the backup's cluster.
func checkDeltaTarget(target string, info *Info) error {
	entries, err := os.ReadDir(target)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if len(entries) == 0 {
		return nil
	}
	if pid, ok := livePostmaster(target); ok {
		return fmt.Errorf("%w: %s/postmaster.pid names process %d, which is alive: stop PostgreSQL first (pg_ctl -D %s stop), or remove postmaster.pid if that process is not PostgreSQL",
			ErrPostgresRunning, target, pid, target)
	}
	if _, err := os.Stat(filepath.Join(target, "PG_VERSION")); err != nil {
		return fmt.Errorf("%w: %s holds %d entries but no PG_VERSION; --delta only rewrites PostgreSQL data directories (use an empty --target for a new one)",
			ErrNotDataDir, target, len(entries))
	}
	if sys, ok := controlSystemID(target); ok && info.SystemIdentifier != "" && sys != info.SystemIdentifier {
		return fmt.Errorf("%w: %s belongs to the cluster with system identifier %s, the backup to %s; --delta only rewrites a data directory of the same cluster",
			ErrNotDataDir, target, sys, info.SystemIdentifier)
	}
	return nil
}

// livePostmaster reads postmaster.pid and reports its process if it
// exists.
func livePostmaster(dataDir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0, false
	}
	err = syscall.Kill(pid, 0)
	return pid, err == nil || errors.Is(err, syscall.EPERM)
}

// controlSystemID reads the system identifier, the first field of
// global/pg_control (a uint64 in the machine's byte order).
func controlSystemID(dataDir string) (string, bool) {
	f, err := os.Open(filepath.Join(dataDir, "global", "pg_control"))
	if err != nil {
		return "", false
	}
	defer f.Close()
	var b [8]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		return "", false
	}
	return strconv.FormatUint(binary.NativeEndian.Uint64(b[:]), 10), true
}

// ensureDir makes dst a directory, keeping a symbolic link to a directory
// (e.g. pg_wal on another disk).
func (d *deltaRun) ensureDir(dst string) error {
	fi, err := os.Lstat(dst)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("restore: %w", err)
	case fi.IsDir():
		return nil
	case fi.Mode()&fs.ModeSymlink != 0:
		if st, err := os.Stat(dst); err == nil && st.IsDir() {
			return nil
		}
		fallthrough
	default:
		if err := d.remove(dst); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// ensureSymlink makes link a symbolic link to target.
func (d *deltaRun) ensureSymlink(link, target string) error {
	if got, err := os.Readlink(link); err == nil && got == target {
		return nil
	}
	if _, err := os.Lstat(link); err == nil {
		if err := d.remove(link); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o700); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := os.Symlink(target, link); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// remove deletes a path the backup does not hold (or holds as another
// kind of file) and records it.
func (d *deltaRun) remove(p string) error {
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("restore: remove %s: %w", p, err)
	}
	d.mu.Lock()
	d.res.Removed++
	d.res.RemovedPaths = append(d.res.RemovedPaths, p)
	d.mu.Unlock()
	return nil
}

// removeStale deletes, below the expected directory dir, everything the
// backup does not hold. It descends into expected directories (following
// a symbolic link to a directory kept by ensureDir), never into expected
// symbolic links.
func (d *deltaRun) removeStale(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		switch {
		case !d.expected[p] && !d.links[p]:
			if err := d.remove(p); err != nil {
				return err
			}
		case d.links[p]:
		default:
			fi, err := os.Stat(p)
			if err == nil && fi.IsDir() {
				if err := d.removeStale(p); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// update brings one file to the backup's content.
func (d *deltaRun) update(ctx context.Context, path, dst string, n *repo.Node, override []byte, buf *[]byte) error {
	fi, err := os.Lstat(dst)
	if err == nil && !fi.Mode().IsRegular() {
		if err := d.remove(dst); err != nil {
			return err
		}
		err = fs.ErrNotExist
	}
	if errors.Is(err, fs.ErrNotExist) {
		refs, err := d.r.ChunkList(ctx, n)
		if err != nil {
			return err
		}
		written, err := restoreFile(ctx, d.r, dst, n, override)
		d.mu.Lock()
		d.res.Checked++
		d.res.Created++
		d.res.CreatedFiles = append(d.res.CreatedFiles, path)
		d.res.BytesWritten += written
		d.res.ChunksWritten += int64(len(refs))
		d.mu.Unlock()
		return err
	}
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}

	out, err := os.OpenFile(dst, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer out.Close()
	var written, read, chunks int64
	changed := false
	if override != nil {
		have, err := io.ReadAll(out)
		if err != nil {
			return fmt.Errorf("restore: read %s: %w", dst, err)
		}
		read = int64(len(have))
		if !bytes.Equal(have, override) {
			if _, err := out.WriteAt(override, 0); err != nil {
				return fmt.Errorf("restore: write %s: %w", dst, err)
			}
			written, chunks, changed = int64(len(override)), 1, true
		}
		if err := out.Truncate(int64(len(override))); err != nil {
			return fmt.Errorf("restore: truncate %s: %w", dst, err)
		}
		changed = changed || read != int64(len(override))
	} else {
		f, err := d.r.OpenNode(ctx, n)
		if err != nil {
			return err
		}
		size := fi.Size()
		for i, c := range f.Chunks() {
			if err := ctx.Err(); err != nil {
				return err
			}
			off := f.ChunkOffset(i)
			if off+int64(c.Size) <= size {
				if cap(*buf) < int(c.Size) {
					*buf = make([]byte, c.Size)
				}
				b := (*buf)[:c.Size]
				if _, err := out.ReadAt(b, off); err != nil {
					return fmt.Errorf("restore: read %s at %d: %w", dst, off, err)
				}
				read += int64(c.Size)
				if d.r.BlobID(b) == c.ID {
					continue
				}
			}
			data, err := d.r.LoadBlob(ctx, c.ID)
			if err != nil {
				return fmt.Errorf("restore %s: %w", dst, err)
			}
			if len(data) != int(c.Size) {
				return fmt.Errorf("restore %s: chunk %s is %d bytes, the list says %d: %w", dst, c.ID.Short(), len(data), c.Size, repo.ErrContentCorrupt)
			}
			if _, err := out.WriteAt(data, off); err != nil {
				return fmt.Errorf("restore: write %s: %w", dst, err)
			}
			written += int64(len(data))
			chunks++
			changed = true
		}
		if size != n.Size {
			if err := out.Truncate(n.Size); err != nil {
				return fmt.Errorf("restore: truncate %s: %w", dst, err)
			}
			changed = true
		}
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	applyMeta(dst, n)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.res.Checked++
	d.res.BytesRead += read
	d.res.BytesWritten += written
	d.res.ChunksWritten += chunks
	if changed {
		d.res.Rewritten++
		d.res.RewrittenFiles = append(d.res.RewrittenFiles, path)
	} else {
		d.res.Unchanged++
	}
	return nil
}

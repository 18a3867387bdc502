package stream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgvault/pgvault/internal/atomicfile"
	"github.com/pgvault/pgvault/internal/pg/wal"
)

// Spool files. Segments are stored under their own names; temporary files
// are atomicfile's (atomicfile.IsTemp), as are the prefetcher's markers.
const (
	spoolWantFile = "want"          // "NAME SEGSIZE\n": the segment recovery asked for last
	spoolLockFile = "prefetch.lock" // flock'ed by the one running prefetcher; holds its pid
)

// ErrPrefetchRunning is returned by LockPrefetch when another process
// holds the spool's prefetch lock.
var ErrPrefetchRunning = errors.New("a prefetcher is already running for this spool")

// ErrUnsafeSpool is matched by OpenSpool's error when the folder could be
// written by someone else, so its content cannot be trusted.
var ErrUnsafeSpool = errors.New("spool folder is not private")

// Spool is a private local folder of verified WAL segments fetched ahead of
// archive recovery: Prefetch fills it, restore_command takes from it (Take)
// and removes what recovery has passed (Clean).
// Its path is <cache dir>/<repository id>/spool: the repository id is in
// the plaintext config, so finding a spooled segment needs no password.
//
// Every entry is written whole (a temporary file renamed into place) and
// verified again when taken, so a crash or a damaged file costs a
// download, never wrong WAL. Only complete segments are spooled; their
// content never changes in the repository (a different file under the same
// name is refused), so an entry cannot go stale. Entries recovery has
// passed or that are older than a limit are removed by Clean.
//
// Several processes may use one spool at once: all writes are renames, and
// the prefetch lock (flock, released when its holder exits) keeps one
// prefetcher per spool. Two clusters restoring from the same repository on
// one host with the same cache folder share a spool; that stays correct
// (every entry is verified against its name) but may cost downloads.
type Spool struct {
	dir string
}

// OpenSpool opens (creating it if needed, mode 0700) the spool of
// repository repoID under cacheDir. It refuses, with an error matching
// ErrUnsafeSpool, a spool or repository folder owned by another user or
// writable by group or others, and a cache folder that is owned by another
// user (other than root) or writable by others without the sticky bit: a
// fallback cache under a shared /tmp must not let another local user plant
// WAL for PostgreSQL to replay.
func OpenSpool(cacheDir, repoID string) (*Spool, error) {
	if repoID == "" || strings.ContainsAny(repoID, `/\`) || repoID == "." || repoID == ".." {
		return nil, fmt.Errorf("spool: bad repository id %q", repoID)
	}
	dir := filepath.Join(cacheDir, repoID, "spool")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create WAL spool: %w", err)
	}
	if err := checkPrivate(cacheDir, false, true); err != nil {
		return nil, err
	}
	for _, d := range []string{filepath.Join(cacheDir, repoID), dir} {
		if err := checkPrivate(d, true, false); err != nil {
			return nil, err
		}
	}
	return &Spool{dir: dir}, nil
}

// checkPrivate checks that dir is a folder owned by this user (or root,
// unless strict) that no one else can write (a sticky folder is allowed
// when sticky is set). With strict, dir must not be a symbolic link.
func checkPrivate(dir string, strict, sticky bool) error {
	stat := os.Stat
	if strict {
		stat = os.Lstat
	}
	fi, err := stat(dir)
	if err != nil {
		return fmt.Errorf("WAL spool: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("WAL spool: %s is not a folder: %w", dir, ErrUnsafeSpool)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	uid := uint32(os.Geteuid())
	if st.Uid != uid && (strict || st.Uid != 0) {
		return fmt.Errorf("WAL spool: %s is owned by uid %d, not by this user (uid %d): %w; remove it or use --cache-dir", dir, st.Uid, uid, ErrUnsafeSpool)
	}
	perm := fi.Mode()
	if perm.Perm()&0o022 != 0 && !(sticky && perm&fs.ModeSticky != 0) {
		return fmt.Errorf("WAL spool: %s (mode %v) is writable by other users: %w; chmod go-w it or use --cache-dir", dir, perm.Perm(), ErrUnsafeSpool)
	}
	return nil
}

// Dir is the spool's folder.
func (s *Spool) Dir() string { return s.dir }

func (s *Spool) path(name string) string { return filepath.Join(s.dir, name) }

// Has reports whether segment name is spooled.
func (s *Spool) Has(name string) bool {
	_, err := os.Lstat(s.path(name))
	return err == nil
}

// fetchingName is the marker a prefetcher keeps while it downloads
// segment name. It is named like a temporary file (atomicfile.IsTemp), so
// Clean removes one left behind.
func fetchingName(name string) string { return "." + name + ".tmp-fetching" }

// spoolWrite is how spool files and restore_command's output are written:
// whole under their name (a rename), private, and not synced. A spool
// entry lost in a crash costs a download (every entry is verified when
// taken), and PostgreSQL makes the file restore_command wrote durable
// itself (durable_rename) when it keeps it.
func spoolWrite(path string, data []byte) error {
	return atomicfile.WriteFile(path, data, atomicfile.Options{Perm: 0o600, NoSync: true})
}

// startFetching marks segment name as being downloaded by the prefetcher;
// the returned func removes the mark.
func (s *Spool) startFetching(name string) func() {
	p := s.path(fetchingName(name))
	if f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o600); err == nil {
		f.Close()
	}
	return func() { os.Remove(p) }
}

// Fetching reports whether the prefetcher is downloading segment name.
func (s *Spool) Fetching(name string) bool {
	_, err := os.Lstat(s.path(fetchingName(name)))
	return err == nil
}

// Await waits, up to limit, for a segment the running prefetcher is
// downloading: it reports whether the segment is spooled by then. It
// returns at once when the prefetcher is not downloading it, and stops
// waiting as soon as it no longer is (done, failed or gone), so recovery
// never waits for a download that will not come and never downloads a
// segment twice.
func (s *Spool) Await(name string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		if s.Has(name) {
			return true
		}
		if !s.Fetching(name) || !s.PrefetchRunning() || time.Now().After(deadline) {
			return s.Has(name)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Put spools segment name (already verified by the caller).
func (s *Spool) Put(name string, data []byte) error {
	if wal.Classify(name) != wal.KindSegment {
		return fmt.Errorf("spool: %w %q: only complete segments are spooled", wal.ErrInvalidName, name)
	}
	return spoolWrite(s.path(name), data)
}

// Take moves spooled segment name to dest if it is there and passes
// VerifyFile; it reports a miss (ok false, nil error) when it is not, and
// removes an entry that fails verification. dest gets mode 0600 and
// appears whole: a rename (a copy written through a temporary file when dest
// is on another file system). Moving rather than copying keeps a spool hit at a
// few milliseconds; the price is that the one segment PostgreSQL reads
// twice, the last one when recovery ends, is fetched again.
func (s *Spool) Take(name, dest string) (res *FetchResult, ok bool, err error) {
	if wal.Classify(name) != wal.KindSegment {
		return nil, false, nil
	}
	p := s.path(name)
	f, err := os.Open(p)
	if err != nil {
		return nil, false, nil
	}
	defer f.Close()
	v, n, err := verifyMapped(f, name)
	if err != nil {
		os.Remove(p)
		return nil, false, nil
	}
	if err := os.Rename(p, dest); err != nil {
		if !errors.Is(err, unix.EXDEV) {
			return nil, false, fmt.Errorf("move spooled %s to %s: %w", name, dest, err)
		}
		if err := copySpooled(f, dest); err != nil {
			return nil, false, fmt.Errorf("copy spooled %s to %s: %w", name, dest, err)
		}
		os.Remove(p)
	}
	return &FetchResult{Name: name, Kind: v.Kind.String(), Timeline: v.Timeline, Size: n, StoredSize: n,
		SegmentSize: v.SegmentSize, Source: SourceSpool}, true, nil
}

// maxSpooled is the largest file Take maps: PostgreSQL's largest
// wal_segment_size.
const maxSpooled = 1 << 30

// verifyMapped checks spooled segment f against its name through a
// read-only mapping of the page cache: restore_command runs once per
// segment, and reading 16 MiB into a fresh buffer was a quarter of its
// time.
func verifyMapped(f *os.File, name string) (wal.Verified, int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return wal.Verified{}, 0, err
	}
	n := fi.Size()
	if n <= 0 || n > maxSpooled {
		return wal.Verified{}, 0, fmt.Errorf("spooled %s: %d bytes", name, n)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(n), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return wal.Verified{}, 0, fmt.Errorf("map spooled %s: %w", name, err)
	}
	defer unix.Munmap(data)
	v, err := wal.VerifyFile(name, data)
	return v, n, err
}

// copySpooled writes the content of f to dest when the spool and dest are
// on different file systems.
func copySpooled(f *os.File, dest string) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	out, err := atomicfile.Create(dest, atomicfile.Options{Perm: 0o600, NoSync: true})
	if err != nil {
		return err
	}
	defer out.Abort()
	if _, err := io.Copy(out, f); err != nil {
		return err
	}
	return out.Commit()
}

// Want records that recovery asked for segment name (of segSize bytes), so
// a running prefetcher moves its window on.
func (s *Spool) Want(name string, segSize uint64) error {
	if _, err := wal.ParseSegment(name, segSize); err != nil {
		return err
	}
	return spoolWrite(s.path(spoolWantFile), formatWant(name, segSize))
}

// Wanted returns what Want last recorded, ok false if nothing (or nothing
// readable) was.
func (s *Spool) Wanted() (name string, segSize uint64, ok bool) {
	data, err := os.ReadFile(s.path(spoolWantFile))
	if err != nil {
		return "", 0, false
	}
	name, segSize, err = ParseWant(data)
	return name, segSize, err == nil
}

// Passed reports whether recovery has asked for segment name already, or
// for a later one of the same timeline: a prefetcher that has not
// downloaded it yet need not.
func (s *Spool) Passed(name string) bool {
	want, _, ok := s.Wanted()
	return ok && len(name) == len(want) && name[:8] == want[:8] && name <= want
}

func formatWant(name string, segSize uint64) []byte {
	return []byte(name + " " + strconv.FormatUint(segSize, 10) + "\n")
}

// ParseWant decodes the spool's "want" file: a segment name and the segment
// size, separated by one space, ending with a newline.
func ParseWant(data []byte) (name string, segSize uint64, err error) {
	line, ok := bytes.CutSuffix(data, []byte("\n"))
	if !ok {
		return "", 0, errors.New("spool want file: no newline at the end")
	}
	n, sz, ok := strings.Cut(string(line), " ")
	if !ok {
		return "", 0, errors.New("spool want file: want \"NAME SEGSIZE\"")
	}
	segSize, err = strconv.ParseUint(sz, 10, 64)
	if err != nil || !wal.ValidSegmentSize(segSize) {
		return "", 0, fmt.Errorf("spool want file: bad segment size %q", sz)
	}
	if _, err := wal.ParseSegment(n, segSize); err != nil {
		return "", 0, fmt.Errorf("spool want file: %w", err)
	}
	return n, segSize, nil
}

// Ahead counts the spooled segments after segment name on its timeline.
func (s *Spool) Ahead(name string) int {
	ents, err := os.ReadDir(s.dir)
	if err != nil || wal.Classify(name) != wal.KindSegment {
		return 0
	}
	n := 0
	for _, e := range ents {
		x := e.Name()
		if wal.Classify(x) == wal.KindSegment && x[:8] == name[:8] && x[8:] > name[8:] {
			n++
		}
	}
	return n
}

// Clean removes the entries recovery has passed (segments numbered before
// segment current, on any timeline: recovery reads forward; current itself
// stays), entries and
// temporary files older than maxAge, and returns how many it removed.
// current may be "" to clean by age only.
func (s *Spool) Clean(current string, maxAge time.Duration, now time.Time) int {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return 0
	}
	currentOK := wal.Classify(current) == wal.KindSegment
	removed := 0
	for _, e := range ents {
		x := e.Name()
		seg := wal.Classify(x) == wal.KindSegment
		tmp := atomicfile.IsTemp(x)
		if !seg && !tmp {
			continue
		}
		old := false
		if info, err := e.Info(); err == nil && now.Sub(info.ModTime()) > maxAge {
			old = true
		}
		// Segment names of one segment size sort by LSN after the timeline.
		passed := seg && currentOK && x[8:] < current[8:]
		if old || passed {
			if os.Remove(s.path(x)) == nil {
				removed++
			}
		}
	}
	return removed
}

// LockPrefetch takes the spool's prefetch lock, or fails with
// ErrPrefetchRunning. The lock is released by calling release or by the
// process exiting.
func (s *Spool) LockPrefetch() (release func(), err error) {
	f, err := os.OpenFile(s.path(spoolLockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool prefetch lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrPrefetchRunning
		}
		return nil, fmt.Errorf("spool prefetch lock: %w", err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// PrefetchRunning reports whether a process holds the prefetch lock.
func (s *Spool) PrefetchRunning() bool {
	release, err := s.LockPrefetch()
	if err != nil {
		return errors.Is(err, ErrPrefetchRunning)
	}
	release()
	return false
}

package backup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// What a local backup leaves out of the data directory, as PostgreSQL's
// own base backup does (src/backend/backup/basebackup.c in PostgreSQL 15)
// and its documentation on the low-level backup API asks: with the same
// rules, a backup read from the disk restores to the same data directory
// as one streamed with BASE_BACKUP.
var (
	// Directories kept empty, at any depth: their contents are rebuilt,
	// zeroed or thrown away at startup.
	localEmptyDirs = map[string]bool{
		"pg_stat_tmp": true, "pg_replslot": true, "pg_dynshmem": true, "pg_notify": true,
		"pg_serial": true, "pg_snapshots": true, "pg_subtrans": true,
	}
	// Files left out wherever they are.
	localSkipFiles = map[string]bool{
		"postgresql.auto.conf.tmp": true, "current_logfiles.tmp": true,
		"backup_label": true, "tablespace_map": true, "backup_manifest": true,
		"postmaster.pid": true, "postmaster.opts": true,
	}
	// Files in the checksummed folders that are not pages.
	localNoChecksum = map[string]bool{"pg_control": true, "pg_filenode.map": true, "PG_VERSION": true}
	// Relation files of temporary tables: t<backend>_<relfilenode>[_fork][.segment].
	tempRelName = regexp.MustCompile(`^t[0-9]+_[0-9]+(_(fsm|vm|init))?(\.[0-9]+)?$`)
	// Relation files of ordinary tables, split into relfilenode and fork.
	plainRelName = regexp.MustCompile(`^([0-9]+)(_(fsm|vm|init))?(\.[0-9]+)?$`)
)

// relSegmentSize is RELSEG_SIZE: blocks per 1 GiB relation segment file.
const relSegmentSize = 131072

// localEntry is one thing a local backup stores.
type localEntry struct {
	rel  string      // path in the snapshot, slash-separated
	src  string      // path on disk
	info fs.FileInfo // from lstat during the walk
	dir  bool        // stored as a directory (also pg_wal when it is a link)
	link string      // symlink target (pg_tblspc links are not stored)
	// checksummed: a relation file whose pages carry checksums;
	// firstBlock is the block number of its first page.
	checksummed bool
	firstBlock  uint32
}

// localTablespace is one tablespace found in pg_tblspc.
type localTablespace struct {
	oid      uint32
	location string // the link's target, as BASE_BACKUP reports it
	dir      string // its version directory on disk (PG_15_<catalog version>)
}

// localWalk lists what a backup of dataDir stores, with the rules above:
// the main tree first, then each tablespace's version directory under
// pg_tblspc/<oid>. pg_control comes last, as PostgreSQL sends it last.
// warn receives what PostgreSQL would warn about (special files).
func localWalk(dataDir, versionDir string, warn func(string)) ([]localEntry, []localTablespace, error) {
	w := &walker{warn: warn}
	tablespaces, err := readTablespaces(dataDir, versionDir)
	if err != nil {
		return nil, nil, err
	}
	for _, ts := range tablespaces {
		if rel, err := filepath.Rel(dataDir, ts.location); err == nil && filepath.IsLocal(rel) {
			// A tablespace inside the data directory is stored once, as
			// the tablespace.
			w.skipDirs = append(w.skipDirs, filepath.ToSlash(rel))
		}
	}
	if err := w.walk(dataDir, ""); err != nil {
		return nil, nil, err
	}
	for _, ts := range tablespaces {
		fi, err := os.Lstat(ts.dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue // dropped meanwhile, or made by another major version
		}
		if err != nil {
			return nil, nil, fmt.Errorf("tablespace %d: %w", ts.oid, err)
		}
		rel := "pg_tblspc/" + strconv.FormatUint(uint64(ts.oid), 10) + "/" + versionDir
		w.entries = append(w.entries, localEntry{rel: rel, src: ts.dir, info: fi, dir: true})
		if err := w.walk(ts.dir, rel); err != nil {
			return nil, nil, err
		}
	}
	if w.control != nil {
		w.entries = append(w.entries, *w.control)
	}
	return w.entries, tablespaces, nil
}

// readTablespaces reads pg_tblspc: a link per tablespace, named by its OID
// (or, for an in-place tablespace, a folder).
func readTablespaces(dataDir, versionDir string) ([]localTablespace, error) {
	entries, err := os.ReadDir(filepath.Join(dataDir, "pg_tblspc"))
	if err != nil {
		return nil, fmt.Errorf("read pg_tblspc: %w", err)
	}
	var out []localTablespace
	for _, e := range entries {
		oid, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil || oid == 0 {
			continue
		}
		p := filepath.Join(dataDir, "pg_tblspc", e.Name())
		ts := localTablespace{oid: uint32(oid), location: "pg_tblspc/" + e.Name(), dir: filepath.Join(p, versionDir)}
		if e.Type()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(p)
			if err != nil {
				return nil, fmt.Errorf("tablespace %s: %w", e.Name(), err)
			}
			ts.location = target
			if !filepath.IsAbs(target) {
				target = filepath.Join(dataDir, "pg_tblspc", target)
			}
			ts.dir = filepath.Join(target, versionDir)
		}
		out = append(out, ts)
	}
	return out, nil
}

type walker struct {
	entries  []localEntry
	control  *localEntry // global/pg_control, stored last
	skipDirs []string    // tablespaces inside the data directory
	warn     func(string)
}

// walk adds what src (stored as rel) holds, recursively.
func (w *walker) walk(src, rel string) error {
	des, err := os.ReadDir(src)
	if errors.Is(err, fs.ErrNotExist) && rel != "" {
		return nil // dropped while the backup runs: WAL replay drops it too
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	names := make(map[string]bool, len(des))
	for _, de := range des {
		names[de.Name()] = true
	}
	dbDir := isDatabaseDir(rel)
	for _, de := range des {
		name := de.Name()
		childRel := path.Join(rel, name)
		childSrc := filepath.Join(src, name)
		if skipLocal(name, dbDir, names) {
			continue
		}
		fi, err := os.Lstat(childSrc)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("stat %s: %w", childSrc, err)
		}
		switch {
		case localEmptyDirs[name]:
			// Stored as an empty folder, even when it is a link (a
			// pg_stat_tmp on tmpfs).
			w.entries = append(w.entries, localEntry{rel: childRel, src: childSrc, info: fi, dir: true})
		case childRel == "pg_wal":
			// Only the folder (a folder even when it is a link), and its
			// archive_status: the WAL comes from the archive.
			w.entries = append(w.entries,
				localEntry{rel: childRel, src: childSrc, info: fi, dir: true},
				localEntry{rel: "pg_wal/archive_status", src: childSrc, info: fi, dir: true})
		case fi.IsDir():
			w.entries = append(w.entries, localEntry{rel: childRel, src: childSrc, info: fi, dir: true})
			// pg_tblspc's links are not stored: tablespace_map restores
			// them, and the tablespaces are stored under their OIDs.
			if childRel == "pg_tblspc" || slices.Contains(w.skipDirs, childRel) {
				continue
			}
			if err := w.walk(childSrc, childRel); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			e := localEntry{rel: childRel, src: childSrc, info: fi}
			e.checksummed, e.firstBlock = checksummedFile(childRel)
			if childRel == "global/pg_control" {
				w.control = &e
				continue
			}
			w.entries = append(w.entries, e)
		default:
			w.warn(fmt.Sprintf("skipping special file %q", childSrc))
		}
	}
	return nil
}

// skipLocal reports whether PostgreSQL's base backup leaves out the entry
// name of a folder whose entries are siblings.
func skipLocal(name string, dbDir bool, siblings map[string]bool) bool {
	if strings.HasPrefix(name, "pgsql_tmp") || strings.HasPrefix(name, "pg_internal.init") || localSkipFiles[name] || name == ".DS_Store" {
		return true
	}
	if !dbDir {
		return false
	}
	if tempRelName.MatchString(name) {
		return true
	}
	// An unlogged relation (it has an init fork) is stored as its init
	// fork alone: startup resets the relation from it.
	if m := plainRelName.FindStringSubmatch(name); m != nil && m[3] != "init" {
		return siblings[m[1]+"_init"]
	}
	return false
}

// isDatabaseDir reports whether rel is a database's folder, which holds
// relation files: base/<oid> or pg_tblspc/<oid>/<version>/<oid>.
func isDatabaseDir(rel string) bool {
	parts := strings.Split(rel, "/")
	digits := func(s string) bool {
		_, err := strconv.ParseUint(s, 10, 32)
		return err == nil
	}
	switch {
	case len(parts) == 2 && parts[0] == "base":
		return digits(parts[1])
	case len(parts) == 4 && parts[0] == "pg_tblspc":
		return digits(parts[3]) && strings.HasPrefix(parts[2], "PG_")
	}
	return false
}

// checksummedFile reports whether the file at rel holds pages with
// checksums (PostgreSQL checks every file under global/, base/ and
// pg_tblspc/ except a few known ones), and the block number of its first
// page, from its segment number.
func checksummedFile(rel string) (bool, uint32) {
	top, _, _ := strings.Cut(rel, "/")
	if top != "global" && top != "base" && top != "pg_tblspc" {
		return false, 0
	}
	name := path.Base(rel)
	if localNoChecksum[name] {
		return false, 0
	}
	var seg uint64
	if _, after, ok := strings.Cut(name, "."); ok {
		// What follows the first dot is the segment number; PostgreSQL
		// does not check a file where it is not one.
		var err error
		if seg, err = strconv.ParseUint(after, 10, 32); err != nil || seg*relSegmentSize > 1<<32-1 {
			return false, 0
		}
	}
	return true, uint32(seg * relSegmentSize)
}

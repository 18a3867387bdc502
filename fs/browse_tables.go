package fs

import (
	"context"
	"maps"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/pgvault/pgvault/fs/inode"
	"github.com/pgvault/pgvault/fs/overlay"
	"github.com/pgvault/pgvault/internal/pg/relmap"
	"github.com/pgvault/pgvault/repo"
)

// tablesFolder is the browse mount's folder of tables by name:
// tables/<snapshot>/<database>/<schema>.<table>/ with the relation's files
// (main, main.1, fsm, vm, toast, toast_index, index_<name>, ...), for
// the snapshots that recorded their relation map. It sits beside
// snapshots/, not inside each snapshot's folder, so that a snapshot's
// folder stays exactly its data directory (cp -a, pg_verifybackup and
// diff -r against a restore keep working, and a copy holds each file
// once).
const tablesFolder = "tables"

// tablesRoot is tables/: one folder per snapshot with a relation map.
type tablesRoot struct {
	gofs.Inode
	b *browser

	mu    sync.Mutex
	views map[string]*tablesView // by snapshot ID
}

var (
	_ gofs.NodeLookuper  = (*tablesRoot)(nil)
	_ gofs.NodeReaddirer = (*tablesRoot)(nil)
	_ gofs.NodeGetattrer = (*tablesRoot)(nil)
)

func (t *tablesRoot) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, 0o555, overlay.Owner{}, t.b.started)
	out.SetTimeout(dynamicTimeout)
	return 0
}

func (t *tablesRoot) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	b := t.b
	if err := b.loadSnapshots(ctx, false); err != nil {
		return nil, toErrno(err)
	}
	b.mu.Lock()
	var ents []fuse.DirEntry
	for _, name := range b.snapNames {
		if s := b.snaps[name]; hasRelations(s) {
			ents = append(ents, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: inode.Hash("tables", s.ID)})
		}
	}
	b.mu.Unlock()
	slices.SortFunc(ents, func(a, b fuse.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return gofs.NewListDirStream(withDots(t.EmbeddedInode(), ents)), 0
}

func (t *tablesRoot) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	b := t.b
	s, ok, err := b.snapshot(ctx, name)
	if err != nil {
		return nil, toErrno(err)
	}
	if !ok || !hasRelations(s) {
		return nil, syscall.ENOENT
	}
	t.mu.Lock()
	if t.views == nil {
		t.views = map[string]*tablesView{}
	}
	v, ok := t.views[s.ID]
	if !ok {
		v = &tablesView{b: b, snap: s}
		t.views[s.ID] = v
	}
	t.mu.Unlock()
	dirAttr(&out.Attr, 0o555, overlay.Owner{}, s.EndTime)
	out.SetEntryTimeout(dynamicTimeout) // a pruned snapshot disappears
	return t.NewInode(ctx, &tablesDir{v: v}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: inode.Hash("tables", s.ID)}), 0
}

// hasRelations reports whether a snapshot recorded its relation map.
func hasRelations(s *repo.Snapshot) bool {
	_, ok := s.Attachments[relmap.Attachment]
	return ok
}

// tablesView is the tables/ folder of one snapshot; its map is read on
// first use.
type tablesView struct {
	b    *browser
	snap *repo.Snapshot

	mu      sync.Mutex
	m       *relmap.Map
	version map[uint32]string // tablespace -> its version folder
	// By folder name, so that a lookup in a database of 100k tables (ls
	// looks each one up) is not a scan of them all.
	dbs  map[string]*relmap.Database
	rels map[*relmap.Database]map[string]*relmap.Relation
	// folders are the snapshot's relation folders, decoded once.
	folders map[string]*repo.Tree
}

func (v *tablesView) load(ctx context.Context) (*relmap.Map, syscall.Errno) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m != nil {
		return v.m, 0
	}
	data, _, err := v.b.r.LoadAttachment(ctx, v.snap, relmap.Attachment)
	if err == nil {
		v.m, err = relmap.Decode(data)
	}
	if err != nil {
		return nil, v.b.readFailed(v.snap.ShortID()+"/"+tablesFolder, 0, err)
	}
	v.version = map[uint32]string{}
	v.dbs = map[string]*relmap.Database{}
	v.rels = map[*relmap.Database]map[string]*relmap.Relation{}
	for i := range v.m.Databases {
		db := &v.m.Databases[i]
		v.dbs[db.FolderName()] = db
		rels := make(map[string]*relmap.Relation, len(db.Relations))
		for j := range db.Relations {
			rels[db.Relations[j].FolderName()] = &db.Relations[j]
		}
		v.rels[db] = rels
	}
	return v.m, 0
}

// folder is the snapshot's folder at dir, decoded once for every table
// in it (nil when the snapshot has none there).
func (v *tablesView) folder(ctx context.Context, dir string) (*repo.Tree, syscall.Errno) {
	v.mu.Lock()
	t, ok := v.folders[dir]
	v.mu.Unlock()
	if ok {
		return t, 0
	}
	if n, err := v.b.r.Lookup(ctx, v.snap, dir); err == nil && n.Type == repo.NodeDir {
		if t, err = v.b.r.LoadTree(ctx, *n.Subtree); err != nil {
			return nil, v.b.readFailed(v.snap.ShortID()+"/"+dir, 0, err)
		}
	}
	v.mu.Lock()
	if v.folders == nil {
		v.folders = map[string]*repo.Tree{}
	}
	v.folders[dir] = t
	v.mu.Unlock()
	return t, 0
}

// versionDir names a tablespace's version folder in the snapshot
// (pg_tblspc/<oid>/PG_15_202209061).
func (v *tablesView) versionDir(ctx context.Context, ts uint32) (string, bool) {
	v.mu.Lock()
	name, ok := v.version[ts]
	v.mu.Unlock()
	if ok {
		return name, name != ""
	}
	n, err := v.b.r.Lookup(ctx, v.snap, "pg_tblspc/"+strconv.FormatUint(uint64(ts), 10))
	if err == nil && n.Type == repo.NodeDir {
		if t, err := v.b.r.LoadTree(ctx, *n.Subtree); err == nil {
			for _, c := range t.Nodes {
				if strings.HasPrefix(c.Name, "PG_") && c.Type == repo.NodeDir {
					name = c.Name
					break
				}
			}
		}
	}
	v.mu.Lock()
	v.version[ts] = name
	v.mu.Unlock()
	return name, name != ""
}

// tablesDir is tables/ (db nil: one folder per database) or
// tables/<database>/ (one folder per relation).
type tablesDir struct {
	gofs.Inode
	v  *tablesView
	db *relmap.Database
}

var (
	_ gofs.NodeLookuper  = (*tablesDir)(nil)
	_ gofs.NodeReaddirer = (*tablesDir)(nil)
	_ gofs.NodeGetattrer = (*tablesDir)(nil)
)

func (d *tablesDir) ino(name string) uint64 {
	if d.db == nil {
		return inode.Hash("tables", d.v.snap.ID, name)
	}
	return inode.Hash("tables", d.v.snap.ID, d.db.FolderName(), name)
}

func (d *tablesDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, 0o555, overlay.Owner{}, d.v.snap.EndTime)
	return 0
}

func (d *tablesDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	m, errno := d.v.load(ctx)
	if errno != 0 {
		return nil, errno
	}
	var names []string
	if d.db == nil {
		for i := range m.Databases {
			names = append(names, m.Databases[i].FolderName())
		}
	} else {
		for i := range d.db.Relations {
			names = append(names, d.db.Relations[i].FolderName())
		}
	}
	slices.Sort(names)
	ents := make([]fuse.DirEntry, 0, len(names))
	for _, n := range names {
		ents = append(ents, fuse.DirEntry{Name: n, Mode: syscall.S_IFDIR, Ino: d.ino(n)})
	}
	return gofs.NewListDirStream(withDots(d.EmbeddedInode(), ents)), 0
}

func (d *tablesDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if _, errno := d.v.load(ctx); errno != 0 {
		return nil, errno
	}
	dirAttr(&out.Attr, 0o555, overlay.Owner{}, d.v.snap.EndTime)
	d.v.mu.Lock()
	defer d.v.mu.Unlock()
	if d.db == nil {
		if db, ok := d.v.dbs[name]; ok {
			return d.NewInode(ctx, &tablesDir{v: d.v, db: db}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: d.ino(name)}), 0
		}
		return nil, syscall.ENOENT
	}
	if rel, ok := d.v.rels[d.db][name]; ok {
		return d.NewInode(ctx, &tableDir{v: d.v, db: d.db, rel: rel}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: d.ino(name)}), 0
	}
	return nil, syscall.ENOENT
}

// tableDir is tables/<database>/<schema>.<table>/: the relation's files,
// named by role and fork, each the snapshot's own file.
type tableDir struct {
	gofs.Inode
	v   *tablesView
	db  *relmap.Database
	rel *relmap.Relation

	mu      sync.Mutex
	entries map[string]tableEntry
}

// tableEntry is one file of a table: where it is in the snapshot.
type tableEntry struct {
	path string
	node repo.Node
}

var (
	_ gofs.NodeLookuper  = (*tableDir)(nil)
	_ gofs.NodeReaddirer = (*tableDir)(nil)
	_ gofs.NodeGetattrer = (*tableDir)(nil)
)

func (t *tableDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, 0o555, overlay.Owner{}, t.v.snap.EndTime)
	return 0
}

// files finds the relation's files in the snapshot's folders, once.
func (t *tableDir) files(ctx context.Context) (map[string]tableEntry, syscall.Errno) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.entries != nil {
		return t.entries, 0
	}
	entries := map[string]tableEntry{}
	for _, f := range t.rel.Files {
		dir, ok := t.db.Dir(f, func(ts uint32) (string, bool) { return t.v.versionDir(ctx, ts) })
		if !ok {
			continue
		}
		tree, errno := t.v.folder(ctx, dir)
		if errno != 0 {
			return nil, errno
		}
		if tree == nil {
			continue // the relation's folder is not in this backup
		}
		// A relfilenode's files sort together (16384, 16384.1, 16384_fsm):
		// find the first, then read on while the prefix holds.
		prefix := strconv.FormatUint(uint64(f.Filenode), 10)
		first := sort.Search(len(tree.Nodes), func(i int) bool { return tree.Nodes[i].Name >= prefix })
		for i := first; i < len(tree.Nodes) && strings.HasPrefix(tree.Nodes[i].Name, prefix); i++ {
			n := &tree.Nodes[i]
			if name, ok := relmap.EntryName(f, n.Name); ok && n.Type == repo.NodeFile {
				entries[name] = tableEntry{path: path.Join(dir, n.Name), node: *n}
			}
		}
	}
	t.entries = entries
	return entries, 0
}

func (t *tableDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	entries, errno := t.files(ctx)
	if errno != 0 {
		return nil, errno
	}
	ents := make([]fuse.DirEntry, 0, len(entries))
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		ents = append(ents, fuse.DirEntry{Name: name, Mode: syscall.S_IFREG, Ino: inode.Hash("snap", t.v.snap.ID, entries[name].path)})
	}
	return gofs.NewListDirStream(withDots(t.EmbeddedInode(), ents)), 0
}

func (t *tableDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	entries, errno := t.files(ctx)
	if errno != 0 {
		return nil, errno
	}
	e, ok := entries[name]
	if !ok {
		return nil, syscall.ENOENT
	}
	nodeAttr(&e.node, &out.Attr)
	child := &snapNode{b: t.v.b, snap: t.v.snap, node: e.node, path: e.path}
	return t.NewInode(ctx, child, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: inode.Hash("snap", t.v.snap.ID, e.path)}), 0
}

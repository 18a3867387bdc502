package service

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"path"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/fs/overlay"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// recoveryLeftovers are the top-level files a replay leaves behind that a
// backup must not carry: the recovery signal and configuration of the
// replay itself, and the parent's backup_label and tablespace_map, which
// recovery renamed when it started from them.
var recoveryLeftovers = map[string]bool{
	"recovery.signal": true, "standby.signal": true, "recovery.done": true,
	"backup_label.old": true, "tablespace_map.old": true,
}

// storeSynthetic stores what the replay left in the overlay as a new base
// backup: every entry the parent has unchanged is the parent's node (no
// chunk read or stored), a changed relation file stores only the chunks
// its changed ranges touch, anything else changed is read and stored
// whole. postgresql.auto.conf is the parent's: the replay's own recovery
// settings were written into the view. The rules of a base backup leave
// out the same files as a real one (pg_wal's segments, postmaster.pid,
// temporary files, ...). info.BytesRead becomes what was read from the
// overlay; attachments (the replayed cluster's relation map) are stored
// with the snapshot.
func storeSynthetic(ctx context.Context, r *repo.Repository, parent *repo.Snapshot, ov *overlay.Overlay, info *backup.Info, attachments map[string][]byte, rep *SyntheticReport) (*repo.Snapshot, error) {
	control, err := ov.ReadFile(ctx, wal.ControlFilePath)
	if err != nil {
		return nil, err
	}
	cf, err := wal.ParseControlFile(control)
	if err != nil {
		return nil, fmt.Errorf("pg_control after the replay: %w", err)
	}
	if st := cf.State(); st != wal.DBShutdownedInRecovery {
		return nil, fmt.Errorf("pg_control after the replay says %q, not %q: the server did not stop cleanly in recovery", st, wal.DBShutdownedInRecovery)
	}
	parentNodes := map[string]*repo.Node{}
	if err := r.Walk(ctx, parent.Root, func(p string, n *repo.Node) error {
		c := *n
		parentNodes[p] = &c
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read backup %s's tree: %w", parent.ShortID(), err)
	}
	changes, err := ov.Changes(ctx)
	if err != nil {
		return nil, err
	}
	changed := map[string]overlay.FileChange{}
	for _, c := range changes {
		switch c.Op {
		case overlay.Removed:
			rep.Files.Removed++
		case overlay.Created:
			rep.Files.Created++
			changed[c.Path] = c
		default:
			rep.Files.Modified++
			changed[c.Path] = c
		}
	}
	t := &syntheticTree{ctx: ctx, r: r, ov: ov, w: r.NewSnapshotWriter(ctx), parent: parentNodes, changed: changed,
		owner: repo.NodeMeta{UID: parent.RootNode.UID, GID: parent.RootNode.GID}}
	root := parent.RootNode
	if err := t.w.AddDir("", repo.NodeMeta{Mode: root.Mode, UID: root.UID, GID: root.GID, ModTime: root.ModTime}); err != nil {
		t.w.Abort()
		return nil, err
	}
	if err := t.walk(ov.Root(), ""); err != nil {
		t.w.Abort()
		return nil, err
	}
	info.BytesRead = t.read
	meta, err := json.Marshal(info)
	if err != nil {
		t.w.Abort()
		return nil, err
	}
	return t.w.Commit(ctx, repo.SnapshotInfo{Kind: backup.SnapshotKind, Label: info.Label, StartTime: info.StartTime, EndTime: info.StopTime, Meta: meta, Attachments: attachments})
}

// syntheticTree walks the overlay and adds each entry to the writer.
type syntheticTree struct {
	ctx     context.Context
	r       *repo.Repository
	ov      *overlay.Overlay
	w       *repo.SnapshotWriter
	parent  map[string]*repo.Node
	changed map[string]overlay.FileChange
	owner   repo.NodeMeta // who owns what the replay created
	read    int64
}

func (t *syntheticTree) walk(d *overlay.Node, dir string) error {
	entries, err := t.ov.List(t.ctx, d)
	if err != nil {
		return fmt.Errorf("list %q: %w", dir, err)
	}
	siblings := make(map[string]bool, len(entries))
	for _, e := range entries {
		siblings[e.Name] = true
	}
	for _, e := range entries {
		rel := path.Join(dir, e.Name)
		if dir == "" && recoveryLeftovers[e.Name] {
			continue
		}
		storage := backup.StorageOf(dir, e.Name, siblings)
		if storage == backup.Omit {
			continue
		}
		n, err := t.ov.Lookup(t.ctx, d, e.Name)
		if err != nil {
			return fmt.Errorf("look up %s: %w", rel, err)
		}
		a := t.ov.Attr(n)
		meta := t.meta(rel, a)
		switch {
		case a.Kind == overlay.KindDir:
			if err := t.w.AddDir(rel, meta); err != nil {
				return err
			}
			if storage == backup.EmptyDir {
				continue
			}
			if rel == "pg_wal" {
				if err := t.w.AddDir("pg_wal/archive_status", meta); err != nil {
					return err
				}
				continue
			}
			if err := t.walk(n, rel); err != nil {
				return err
			}
		case a.Kind == overlay.KindSymlink:
			if dir == "pg_tblspc" {
				// A tablespace the replayed WAL created: its files went to
				// its location on this host, outside the view.
				return fmt.Errorf("the replayed WAL creates tablespace %s, whose files are outside the backup: take a base backup from the server to include it", e.Name)
			}
			target, err := t.ov.Readlink(n)
			if err != nil {
				return err
			}
			if err := t.w.AddSymlink(rel, target, meta); err != nil {
				return err
			}
		case a.Kind == overlay.KindFile:
			if err := t.addFile(rel, a, meta); err != nil {
				return err
			}
		}
	}
	return nil
}

// meta is an entry's metadata: the parent's owner and mode for what the
// parent has (the view shows every file as the mount's owner), the
// replay's mode and time otherwise.
func (t *syntheticTree) meta(rel string, a overlay.Attr) repo.NodeMeta {
	m := repo.NodeMeta{Mode: fsMode(a.Mode), UID: t.owner.UID, GID: t.owner.GID, ModTime: a.MTime}
	if pn, ok := t.parent[rel]; ok {
		m.UID, m.GID = pn.UID, pn.GID
		if _, changed := t.changed[rel]; !changed {
			m.Mode, m.ModTime = pn.Mode, pn.ModTime
		}
	}
	return m
}

func (t *syntheticTree) addFile(rel string, a overlay.Attr, meta repo.NodeMeta) error {
	c, changed := t.changed[rel]
	pn := t.parent[rel]
	if c.Op == overlay.Moved {
		pn = t.parent[c.From]
	}
	if rel == "postgresql.auto.conf" && pn != nil {
		return t.w.AddNode(rel, pn) // the replay's recovery settings stay out
	}
	if !changed && pn != nil && pn.Type == repo.NodeFile {
		return t.w.AddNode(rel, pn)
	}
	f, err := t.ov.OpenFile(t.ctx, rel)
	if err != nil {
		return err
	}
	defer f.Close()
	size := f.Size()
	kind := backup.SplitFor(rel)
	if changed && c.Op != overlay.Created && pn != nil && pn.Type == repo.NodeFile && kind == repo.SplitFixed {
		base, err := t.r.ChunkList(t.ctx, pn)
		if err != nil {
			return fmt.Errorf("%s in the parent backup: %w", rel, err)
		}
		ranges := make([]repo.Range, len(c.Changed))
		for i, x := range c.Changed {
			ranges[i] = repo.Range{Off: x.Off, Len: x.Len}
		}
		n, err := t.w.AddFileFrom(rel, meta, base, ranges, size, f)
		t.read += n
		return err
	}
	n, err := t.w.AddFile(rel, meta, io.NewSectionReader(f, 0, size), kind)
	t.read += n
	return err
}

// fsMode is a view entry's permission bits as a repository node keeps them.
func fsMode(perm uint32) fs.FileMode { return fs.FileMode(perm) & fs.ModePerm }

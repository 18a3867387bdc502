package backup

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/pgvault/pgvault/repo"
)

// DirOptions configure SaveDirectory.
type DirOptions struct {
	Kind  string // manifest kind; "" means "files"
	Label string
	Meta  []byte // JSON for the manifest
}

// SaveDirectory stores the tree under root as one snapshot: relation files
// in page-aligned chunks, everything else content-defined. It is for data
// directories of stopped clusters and plain folders; a running cluster is
// backed up over the replication protocol instead.
func SaveDirectory(ctx context.Context, r *repo.Repository, root string, opts DirOptions) (*repo.Snapshot, error) {
	w := r.NewSnapshotWriter(ctx)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		meta := metaOf(info)
		switch {
		case d.IsDir():
			return w.AddDir(rel, meta)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return w.AddSymlink(rel, target, meta)
		case d.Type().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = w.AddFile(rel, meta, f, SplitFor(rel))
			return err
		}
		return nil // sockets, pipes, devices have no content to keep
	})
	if err != nil {
		w.Abort()
		return nil, fmt.Errorf("save %s: %w", root, err)
	}
	kind := opts.Kind
	if kind == "" {
		kind = "files"
	}
	return w.Commit(ctx, repo.SnapshotInfo{Kind: kind, Label: opts.Label, Meta: opts.Meta})
}

func metaOf(info fs.FileInfo) repo.NodeMeta {
	m := repo.NodeMeta{Mode: info.Mode().Perm() | info.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky), ModTime: info.ModTime()}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		m.UID, m.GID = st.Uid, st.Gid
	}
	return m
}

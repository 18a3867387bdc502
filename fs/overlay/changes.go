package overlay

import (
	"cmp"
	"context"
	"encoding"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo"
)

// ChangeOp says how an entry of the view differs from the snapshot.
type ChangeOp uint8

const (
	// Created: the node was made in the overlay. At a path the snapshot
	// has, it replaces the snapshot's entry.
	Created ChangeOp = iota + 1
	// Removed: the snapshot's entry at Path is gone and nothing is at
	// Path now; a directory goes with everything below it.
	Removed
	// Moved: the node is the snapshot's entry From, renamed to Path (at a
	// path the snapshot has, it replaces the snapshot's entry). A
	// directory brings what is below it: entries there are listed only if
	// they changed themselves.
	Moved
	// Modified: a file of the snapshot, in its place, whose content
	// changed (blocks written, truncated or extended).
	Modified
)

// String names the change: created, removed, moved or modified.
func (op ChangeOp) String() string {
	switch op {
	case Created:
		return "created"
	case Removed:
		return "removed"
	case Moved:
		return "moved"
	case Modified:
		return "modified"
	}
	return fmt.Sprintf("change %d", uint8(op))
}

// MarshalText gives JSON reports the name of the change.
func (op ChangeOp) MarshalText() ([]byte, error) { return []byte(op.String()), nil }

var (
	_ fmt.Stringer           = ChangeOp(0)
	_ encoding.TextMarshaler = ChangeOp(0)
)

// Range is the byte range [Off, Off+Len) of a file.
type Range struct {
	Off int64 `json:"off"`
	Len int64 `json:"len"`
}

// FileChange is one entry of the view that differs from the snapshot.
type FileChange struct {
	Op   ChangeOp `json:"op"`
	Kind Kind     `json:"kind"`
	// Path is the entry's path in the view; for Removed, where the
	// snapshot's entry was (its folder's path in the view, which differs
	// from its path in the snapshot when the folder moved).
	Path string `json:"path"`
	// From is the entry's path in the snapshot when it differs from Path
	// (it, or a folder above it, moved); "" for Created.
	From string `json:"from,omitempty"`
	// Target is a symbolic link's target (Created and Moved links).
	Target string `json:"target,omitempty"`
	// Size is a file's size now (0 for Removed); BaseSize the size of
	// its snapshot content (0 for Created).
	Size     int64 `json:"size,omitempty"`
	BaseSize int64 `json:"base_size,omitempty"`
	// Changed lists, for a file, the byte ranges below Size whose content
	// may differ from the snapshot content (of BaseSize bytes): in order,
	// merged into runs, aligned to the overlay's BlockSize except where
	// they end at Size or start at a truncation point. Bytes outside them
	// read as the snapshot content. A Created file's is the whole file.
	Changed []Range `json:"changed,omitempty"`
}

// Changes lists, relative to the snapshot, every entry of the view that
// was created, removed or moved, and every file of the snapshot whose
// content changed, in path order, with the changed byte ranges of each
// file. Read the current content of a listed file with OpenFile.
//
// Changed may say more than what differs, never less: the journal does
// not tell blocks written apart from blocks that copy-on-read or
// hydration copied from the snapshot unchanged, and a file the overlay
// holds whole counts as changed all over. An overlay opened with
// CopyOnRead 0 and never hydrated lists exactly the blocks written.
// Attribute-only changes (mode, owner, times) are not listed; Stat gives
// an entry's attributes now.
//
// It reads the repository only for the snapshot entries of folders that
// lost some (to name them). It is safe to call while the overlay is in
// use, but reports a consistent state only when nothing changes the
// overlay meanwhile (no mount serves it).
func (ov *Overlay) Changes(ctx context.Context) ([]FileChange, error) {
	type fileVisit struct {
		n          *Node
		path, from string
		op         ChangeOp // 0: in place
	}
	type dirCheck struct {
		d       *Node
		path    string
		subtree chunk.ID
	}
	var (
		out    []FileChange
		files  []fileVisit
		checks []dirCheck
	)
	ov.mu.Lock()
	var walk func(d *Node, dpath string)
	walk = func(d *Node, dpath string) {
		if d.children == nil {
			return // never loaded: nothing below it was touched
		}
		inPlace := 0
		for _, name := range slices.Sorted(maps.Keys(d.children)) {
			c := d.children[name]
			p := joinPath(dpath, name)
			var op ChangeOp
			switch {
			case c.base == nil:
				op = Created
			case d.base != nil && c.basePath == joinPath(d.basePath, name):
				inPlace++
			default:
				op = Moved
			}
			var from string
			if c.base != nil && c.basePath != p {
				from = c.basePath
			}
			switch c.kind {
			case KindFile:
				files = append(files, fileVisit{c, p, from, op})
			case KindDir:
				if op != 0 {
					out = append(out, FileChange{Op: op, Kind: KindDir, Path: p, From: from})
				}
				walk(c, p)
			case KindSymlink:
				if op != 0 {
					out = append(out, FileChange{Op: op, Kind: KindSymlink, Path: p, From: from, Target: c.target})
				}
			}
		}
		// Fewer snapshot entries in place than the snapshot had: some went
		// away, and only the snapshot's tree can name them.
		if d.base != nil && d.base.Subtree != nil && inPlace < d.baseEntries {
			checks = append(checks, dirCheck{d, dpath, *d.base.Subtree})
		}
	}
	walk(ov.root, "")
	ov.mu.Unlock()

	for _, v := range files {
		size, baseSize, changed := ov.fileChanges(v.n)
		op := v.op
		if op == 0 {
			if len(changed) == 0 && size == baseSize {
				continue
			}
			op = Modified
		}
		out = append(out, FileChange{Op: op, Kind: KindFile, Path: v.path, From: v.from, Size: size, BaseSize: baseSize, Changed: changed})
	}
	for _, dc := range checks {
		t, err := ov.r.LoadTree(ctx, dc.subtree)
		if err != nil {
			ov.noteReadError(err)
			return nil, fmt.Errorf("list the changes of the overlay: directory %s: %w", dc.d.basePath, err)
		}
		ov.mu.Lock()
		for i := range t.Nodes {
			bn := &t.Nodes[i]
			if dc.d.children[bn.Name] != nil {
				continue // the snapshot's entry, or what replaced it (listed above)
			}
			fc := FileChange{Op: Removed, Kind: kindOf(bn), Path: joinPath(dc.path, bn.Name)}
			if bp := joinPath(dc.d.basePath, bn.Name); bp != fc.Path {
				fc.From = bp
			}
			if fc.Kind == KindFile {
				fc.BaseSize = bn.Size
			}
			out = append(out, fc)
		}
		ov.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b FileChange) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

func kindOf(bn *repo.Node) Kind {
	switch bn.Type {
	case repo.NodeDir:
		return KindDir
	case repo.NodeSymlink:
		return KindSymlink
	}
	return KindFile
}

// fileChanges returns file n's size, the size of its snapshot content and
// the ranges that may differ from that content (see FileChange.Changed).
func (ov *Overlay) fileChanges(n *Node) (size, baseSize int64, changed []Range) {
	f := n.file
	f.mu.RLock()
	defer f.mu.RUnlock()
	size = f.sizeLocked()
	if n.base != nil {
		baseSize = n.base.Size
	}
	if n.base == nil || f.local {
		if size > 0 {
			changed = []Range{{0, size}}
		}
		return size, baseSize, changed
	}
	for _, r := range f.present.ranges() {
		off := int64(r.First) * ov.bs
		if end := min(int64(r.First+r.Count)*ov.bs, size); off < end {
			changed = append(changed, Range{off, end - off})
		}
	}
	// Past baseLimit a layered file reads zeros where no block is present:
	// a truncation hid the snapshot's tail, or the file grew.
	if f.baseLimit < size {
		changed = append(changed, Range{f.baseLimit, size - f.baseLimit})
	}
	return size, baseSize, mergeRanges(changed)
}

// mergeRanges sorts ranges and merges those that overlap or touch.
func mergeRanges(rs []Range) []Range {
	slices.SortFunc(rs, func(a, b Range) int { return cmp.Compare(a.Off, b.Off) })
	var out []Range
	for _, r := range rs {
		if k := len(out) - 1; k >= 0 && r.Off <= out[k].Off+out[k].Len {
			out[k].Len = max(out[k].Len, r.Off+r.Len-out[k].Off)
			continue
		}
		out = append(out, r)
	}
	return out
}

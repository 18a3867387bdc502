package repo

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pgvault/pgvault/chunk"
)

// NodeType is the kind of a tree entry.
type NodeType string

const (
	NodeFile    NodeType = "file"
	NodeDir     NodeType = "dir"
	NodeSymlink NodeType = "symlink"
)

// ChunkRef is one chunk of a file: its blob and its plaintext length.
type ChunkRef struct {
	ID   chunk.ID `json:"id"`
	Size uint32   `json:"size"`
}

// inlineChunks is how many chunk refs a file node holds itself; larger
// files get a content-list blob, so an unchanged large file costs one ID
// in the next snapshot's tree.
const inlineChunks = 8

// Node is one entry of a directory tree.
type Node struct {
	Name    string      `json:"name"`
	Type    NodeType    `json:"type"`
	Mode    fs.FileMode `json:"mode"` // permission bits only
	UID     uint32      `json:"uid"`
	GID     uint32      `json:"gid"`
	ModTime time.Time   `json:"mtime"`
	Size    int64       `json:"size,omitempty"`
	// Chunks lists a small file's content; Content names a content-list
	// blob for a large one. At most one of them is set.
	Chunks  []ChunkRef `json:"chunks,omitempty"`
	Content *chunk.ID  `json:"content,omitempty"`
	Subtree *chunk.ID  `json:"subtree,omitempty"`
	Target  string     `json:"target,omitempty"`
}

// Tree is a directory's entries, sorted by name.
type Tree struct {
	Nodes []Node `json:"nodes"`
}

// Find returns the entry called name.
func (t *Tree) Find(name string) (*Node, bool) {
	i := sort.Search(len(t.Nodes), func(i int) bool { return t.Nodes[i].Name >= name })
	if i < len(t.Nodes) && t.Nodes[i].Name == name {
		return &t.Nodes[i], true
	}
	return nil, false
}

// EncodeTree returns the canonical encoding of t (nodes sorted by name).
func EncodeTree(t *Tree) ([]byte, error) {
	slices.SortFunc(t.Nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return json.Marshal(t)
}

// ErrTreeCorrupt is matched by errors from DecodeTree.
var ErrTreeCorrupt = errors.New("tree is corrupt")

// DecodeTree parses and validates a tree blob.
func DecodeTree(data []byte) (*Tree, error) {
	var t Tree
	if err := json.Unmarshal(data, &t); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTreeCorrupt, err)
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if err := validName(n.Name); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrTreeCorrupt, err)
		}
		if i > 0 && t.Nodes[i-1].Name >= n.Name {
			return nil, fmt.Errorf("%w: entries not sorted or duplicated at %q", ErrTreeCorrupt, n.Name)
		}
		switch n.Type {
		case NodeFile:
			if n.Size < 0 || n.Subtree != nil || (n.Content != nil && len(n.Chunks) > 0) {
				return nil, fmt.Errorf("%w: file %q is malformed", ErrTreeCorrupt, n.Name)
			}
			if n.Content == nil {
				var sum int64
				for _, c := range n.Chunks {
					sum += int64(c.Size)
				}
				if sum != n.Size {
					return nil, fmt.Errorf("%w: file %q: chunks hold %d bytes, size is %d", ErrTreeCorrupt, n.Name, sum, n.Size)
				}
			}
		case NodeDir:
			if n.Subtree == nil {
				return nil, fmt.Errorf("%w: directory %q has no subtree", ErrTreeCorrupt, n.Name)
			}
		case NodeSymlink:
		default:
			return nil, fmt.Errorf("%w: %q has unknown type %q", ErrTreeCorrupt, n.Name, n.Type)
		}
		if n.Mode&^fs.ModePerm&^(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
			return nil, fmt.Errorf("%w: %q has mode bits %v", ErrTreeCorrupt, n.Name, n.Mode)
		}
	}
	return &t, nil
}

func validName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("invalid entry name %q", name)
	}
	return nil
}

// SplitPath cleans a slash-separated snapshot path into its elements;
// "", "." and "/" are the root.
func SplitPath(p string) ([]string, error) {
	p = path.Clean("/" + p)
	if p == "/" {
		return nil, nil
	}
	parts := strings.Split(p[1:], "/")
	for _, e := range parts {
		if err := validName(e); err != nil {
			return nil, err
		}
	}
	return parts, nil
}

// Content-list blob layout: u32 count | count x { id [32] | size u32 }.
const contentRefSize = chunk.IDSize + 4

// EncodeContent encodes a chunk list.
func EncodeContent(refs []ChunkRef) []byte {
	out := make([]byte, 0, 4+len(refs)*contentRefSize)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(refs)))
	for _, r := range refs {
		out = append(out, r.ID[:]...)
		out = binary.LittleEndian.AppendUint32(out, r.Size)
	}
	return out
}

// ErrContentCorrupt is matched by errors from DecodeContent.
var ErrContentCorrupt = errors.New("content list is corrupt")

// DecodeContent parses a chunk list.
func DecodeContent(data []byte) ([]ChunkRef, error) {
	if len(data) < 4 {
		return nil, fmt.Errorf("%w: %d bytes", ErrContentCorrupt, len(data))
	}
	n := binary.LittleEndian.Uint32(data)
	if uint64(len(data)-4) != uint64(n)*contentRefSize {
		return nil, fmt.Errorf("%w: %d entries in %d bytes", ErrContentCorrupt, n, len(data))
	}
	refs := make([]ChunkRef, n)
	p := data[4:]
	for i := range refs {
		copy(refs[i].ID[:], p)
		refs[i].Size = binary.LittleEndian.Uint32(p[32:])
		if refs[i].Size == 0 || refs[i].Size > chunk.MaxBlobSize {
			return nil, fmt.Errorf("%w: chunk %d has size %d", ErrContentCorrupt, i, refs[i].Size)
		}
		p = p[contentRefSize:]
	}
	return refs, nil
}

package fs

import (
	"bytes"
	"context"
	"slices"
	"syscall"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/pgvault/pgvault/fs/fstest"
	"github.com/pgvault/pgvault/internal/pg/relmap"
)

func TestBrowseTables(t *testing.T) {
	ctx := context.Background()
	tree := fstest.SampleTree()
	tree.Files["base/1/16384.1"] = fstest.RandBytes(9, 8192)
	tree.Files["base/1/16384_fsm"] = fstest.RandBytes(10, 8192)
	m := &relmap.Map{Databases: []relmap.Database{{OID: 1, Name: "app", Tablespace: relmap.DefaultTablespace, Relations: []relmap.Relation{
		{Schema: "public", Name: "orders", Kind: "r", Files: []relmap.File{{Filenode: 16384}, {Role: "index_orders_pkey", Filenode: 16385}}},
		{Schema: "public", Name: "spaced", Kind: "r", Files: []relmap.File{{Tablespace: 16385, Filenode: 16400}}},
		{Schema: "odd/schema", Name: "gone", Kind: "r", Files: []relmap.File{{Filenode: 99999}}},
	}}}}
	data, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	tree.Attachments = map[string][]byte{relmap.Attachment: data}
	r, s := fstest.Snapshot(t, tree)
	root, err := NewBrowseRoot(ctx, r, BrowseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gofs.NewNodeFS(root, &gofs.Options{})

	if got := names(t, root); !slices.Equal(got, []string{"snapshots", "tables", "wal"}) {
		t.Fatalf("the root lists %v", got)
	}
	tables, _ := lookup(t, root, "tables")
	if got := names(t, tables.Operations()); !slices.Equal(got, []string{s.ShortID()}) {
		t.Fatalf("tables/ lists %v", got)
	}
	snap, _ := lookup(t, tables.Operations(), s.ShortID())
	if got := names(t, snap.Operations()); !slices.Equal(got, []string{"app"}) {
		t.Fatalf("tables/%s lists %v", s.ShortID(), got)
	}
	db, _ := lookup(t, snap.Operations(), "app")
	if got := names(t, db.Operations()); !slices.Equal(got, []string{"odd%2Fschema.gone", "public.orders", "public.spaced"}) {
		t.Fatalf("tables/%s/app lists %v", s.ShortID(), got)
	}
	for _, tt := range []struct {
		table string
		files map[string]string // entry -> path in the snapshot
	}{
		{"public.orders", map[string]string{"main": "base/1/16384", "main.1": "base/1/16384.1", "fsm": "base/1/16384_fsm", "index_orders_pkey": "base/1/16385"}},
		{"public.spaced", map[string]string{"main": "pg_tblspc/16385/PG_15_202209061/1/16400"}},
		{"odd%2Fschema.gone", map[string]string{}},
	} {
		dir, _ := lookup(t, db.Operations(), tt.table)
		got := names(t, dir.Operations())
		if len(got) != len(tt.files) {
			t.Fatalf("%s lists %v, want %v", tt.table, got, tt.files)
		}
		for entry, p := range tt.files {
			n, out := lookup(t, dir.Operations(), entry)
			want := tree.Files[p]
			if out.Size != uint64(len(want)) || out.Mode != syscall.S_IFREG|0o600 {
				t.Fatalf("%s/%s attr %+v", tt.table, entry, out.Attr)
			}
			fh, _, errno := n.Operations().(gofs.NodeOpener).Open(ctx, syscall.O_RDONLY)
			if errno != 0 {
				t.Fatal(errno)
			}
			if !bytes.Equal(readAll(t, n.Operations(), fh, len(want)), want) {
				t.Fatalf("%s/%s is not %s", tt.table, entry, p)
			}
		}
	}
	if _, errno := tables.Operations().(gofs.NodeLookuper).Lookup(ctx, "nosuch", &fuse.EntryOut{}); errno != syscall.ENOENT {
		t.Fatalf("tables/nosuch: %v", errno)
	}
}

// A snapshot without a relation map has no folder under tables/.
func TestBrowseTablesWithoutMap(t *testing.T) {
	ctx := context.Background()
	r, s := fstest.Snapshot(t, fstest.SampleTree())
	root, err := NewBrowseRoot(ctx, r, BrowseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gofs.NewNodeFS(root, &gofs.Options{})
	tables, _ := lookup(t, root, "tables")
	if got := names(t, tables.Operations()); len(got) != 0 {
		t.Fatalf("tables/ lists %v", got)
	}
	var out fuse.EntryOut
	if _, errno := tables.Operations().(gofs.NodeLookuper).Lookup(ctx, s.ShortID(), &out); errno != syscall.ENOENT {
		t.Fatalf("tables/%s: %v", s.ShortID(), errno)
	}
}

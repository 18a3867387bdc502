package relmap

import (
	"reflect"
	"testing"
)

func TestAssemble(t *testing.T) {
	rows := map[string]relRow{
		"16384": {"sales", "orders", "r", 0, 16384, "0"},
		"16387": {"pg_toast", "pg_toast_16384", "t", 0, 16387, "16384"},
		"16388": {"pg_toast", "pg_toast_16384_index", "i", 0, 16388, "16387"},
		"16390": {"sales", "orders_pkey", "i", 0, 16390, "16384"},
		"16391": {"sales", "orders_id_seq", "S", 0, 16391, "0"},
		"16400": {"sales", "archived", "r", 16399, 16405, "0"}, // after VACUUM FULL: filenode != oid
		"1262":  {"pg_catalog", "pg_database", "r", 1664, 1262, "0"},
	}
	want := []Relation{
		{Schema: "pg_catalog", Name: "pg_database", Kind: "r", Files: []File{{"", 1664, 1262}}},
		{Schema: "sales", Name: "archived", Kind: "r", Files: []File{{"", 16399, 16405}}},
		{Schema: "sales", Name: "orders", Kind: "r", Files: []File{{"", 0, 16384}, {"index_orders_pkey", 0, 16390}, {"toast", 0, 16387}, {"toast_index", 0, 16388}}},
		{Schema: "sales", Name: "orders_id_seq", Kind: "S", Files: []File{{"", 0, 16391}}},
	}
	if got := assemble(rows); !reflect.DeepEqual(got, want) {
		t.Fatalf("assemble:\n got %+v\nwant %+v", got, want)
	}
}

func TestEntryName(t *testing.T) {
	for _, tt := range []struct {
		f    File
		name string
		want string
		ok   bool
	}{
		{File{"", 0, 16384}, "16384", "main", true},
		{File{"", 0, 16384}, "16384.2", "main.2", true},
		{File{"", 0, 16384}, "16384_fsm", "fsm", true},
		{File{"", 0, 16384}, "16384_vm", "vm", true},
		{File{"", 0, 16384}, "16384_init", "init", true},
		{File{"toast", 0, 16387}, "16387", "toast", true},
		{File{"toast", 0, 16387}, "16387_fsm", "toast_fsm", true},
		{File{"index_orders_pkey", 0, 16390}, "16390.1", "index_orders_pkey.1", true},
		{File{"", 0, 16384}, "163840", "", false},
		{File{"", 0, 16384}, "16385", "", false},
		{File{"", 0, 16384}, "16384_xyz", "", false},
		{File{"", 0, 16384}, "PG_VERSION", "", false},
	} {
		got, ok := EntryName(tt.f, tt.name)
		if got != tt.want || ok != tt.ok {
			t.Errorf("EntryName(%+v, %q) = %q, %v; want %q, %v", tt.f, tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestDir(t *testing.T) {
	versions := func(ts uint32) (string, bool) { return "PG_15_202209061", ts == 16399 }
	d := Database{OID: 16385, Tablespace: DefaultTablespace}
	other := Database{OID: 16386, Tablespace: 16399}
	for _, tt := range []struct {
		d    Database
		f    File
		want string
		ok   bool
	}{
		{d, File{Tablespace: 0}, "base/16385", true},
		{d, File{Tablespace: GlobalTablespace}, "global", true},
		{d, File{Tablespace: 16399}, "pg_tblspc/16399/PG_15_202209061/16385", true},
		{other, File{Tablespace: 0}, "pg_tblspc/16399/PG_15_202209061/16386", true},
		{d, File{Tablespace: 17000}, "", false},
	} {
		got, ok := tt.d.Dir(tt.f, versions)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Dir(%+v, %+v) = %q, %v; want %q, %v", tt.d, tt.f, got, ok, tt.want, tt.ok)
		}
	}
}

func TestFolderName(t *testing.T) {
	r := Relation{Schema: "a/b", Name: "50%"}
	if got := r.FolderName(); got != "a%2Fb.50%25" {
		t.Errorf("FolderName = %q", got)
	}
	m := &Map{Databases: []Database{{OID: 5, Name: "postgres", Tablespace: 1663, Relations: []Relation{r}}}}
	data, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(data)
	if err != nil || !reflect.DeepEqual(back, m) {
		t.Fatalf("Decode(Encode) = %+v, %v", back, err)
	}
}

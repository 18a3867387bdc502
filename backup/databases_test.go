package backup

import (
	"errors"
	"maps"
	"slices"
	"testing"
)

func TestExcludedDatabases(t *testing.T) {
	info := &Info{Databases: []Database{{1, "template1"}, {4, "template0"}, {5, "postgres"}, {16384, "app"}, {16385, "shop"}, {16390, "logs"}}}
	for _, tt := range []struct {
		include []string
		want    []uint32
		err     error
	}{
		{nil, nil, nil},
		{[]string{"app"}, []uint32{16385, 16390}, nil},
		{[]string{"app", "logs"}, []uint32{16385}, nil},
		{[]string{"postgres"}, []uint32{16384, 16385, 16390}, nil},
		{[]string{"nosuch"}, nil, ErrNoSuchDatabase},
	} {
		got, err := ExcludedDatabases(info, tt.include)
		if !errors.Is(err, tt.err) {
			t.Errorf("ExcludedDatabases(%v): error %v, want %v", tt.include, err, tt.err)
			continue
		}
		if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, tt.want) {
			t.Errorf("ExcludedDatabases(%v) = %v, want %v", tt.include, keys, tt.want)
		}
	}
	if _, err := ExcludedDatabases(&Info{}, []string{"app"}); !errors.Is(err, ErrNoDatabaseList) {
		t.Errorf("a backup without a database list: %v", err)
	}
	// A cluster without a postgres database still restores.
	if got, err := ExcludedDatabases(&Info{Databases: []Database{{1, "template1"}, {16384, "app"}}}, []string{"app"}); err != nil || len(got) != 0 {
		t.Errorf("without postgres: %v, %v", got, err)
	}
}

func TestExcludedRelationFile(t *testing.T) {
	excluded := map[uint32]bool{16385: true}
	for _, tt := range []struct {
		path string
		want bool
	}{
		{"base/16385/16386", true},
		{"base/16385/16386.1", true},
		{"base/16385/16386_fsm", true},
		{"base/16385/16386_vm", true},
		{"base/16385/16386_init", true},
		{"base/16385/PG_VERSION", false},
		{"base/16385/pg_filenode.map", false},
		{"base/16384/16386", false},
		{"pg_tblspc/16400/PG_15_202209061/16385/16401", true},
		{"pg_tblspc/16400/PG_15_202209061/16384/16401", false},
		{"global/1262", false},
		{"base/16385", false},
		{"base/x/16386", false},
	} {
		if got := excludedRelationFile(tt.path, excluded); got != tt.want {
			t.Errorf("excludedRelationFile(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

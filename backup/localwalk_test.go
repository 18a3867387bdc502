package backup

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestLocalWalk(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	ts := filepath.Join(root, "ts")
	files := []string{
		"PG_VERSION", "postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map", "backup_manifest",
		"postgresql.auto.conf", "postgresql.auto.conf.tmp", "current_logfiles.tmp",
		"global/pg_control", "global/1260", "global/pg_internal.init", "global/pg_filenode.map",
		"base/1/1259", "base/1/1259.1", "base/1/1259_vm", "base/1/PG_VERSION", "base/1/pg_internal.init.123",
		"base/1/16384", "base/1/16384_init", "base/1/16384_fsm", "base/1/16384.2", // unlogged: init fork only
		"base/1/t3_16400", "base/1/t3_16400_fsm", // temporary relation
		"base/pgsql_tmp/pgsql_tmp1.0", "base/1/pgsql_tmp42",
		"pg_wal/000000010000000000000001", "pg_wal/archive_status/000000010000000000000001.done",
		"../stattmp/global.stat", "pg_replslot/s1/state", "pg_subtrans/0000", "pg_notify/0000",
		"pg_xact/0000", "pg_stat/pgstat.stat",
		"../ts/PG_15_202209061/5/16600", "../ts/PG_15_202209061/5/16601_init", "../ts/PG_15_202209061/5/16601",
		"../ts/PG_14_202107181/5/99",
	}
	for _, f := range files {
		p := filepath.Join(data, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"pg_tblspc", "pg_dynshmem", "pg_serial/sub"} {
		os.MkdirAll(filepath.Join(data, d), 0o700)
	}
	if err := os.Symlink(ts, filepath.Join(data, "pg_tblspc", "16500")); err != nil {
		t.Fatal(err)
	}
	// On tmpfs, through a link: stored as an empty folder.
	if err := os.Symlink(filepath.Join(root, "stattmp"), filepath.Join(data, "pg_stat_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(data, "a-fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	var warnings []string
	entries, spaces, err := localWalk(data, "PG_15_202209061", func(s string) { warnings = append(warnings, s) })
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		s := e.rel
		if e.dir {
			s += "/"
		}
		if e.checksummed {
			s += fmt.Sprintf(" @%d", e.firstBlock)
		}
		got = append(got, s)
	}
	want := []string{
		"PG_VERSION", "base/", "base/1/", "base/1/1259 @0", "base/1/1259.1 @131072", "base/1/1259_vm @0",
		"base/1/16384_init @0", "base/1/PG_VERSION",
		"global/", "global/1260 @0", "global/pg_filenode.map",
		"pg_dynshmem/", "pg_notify/", "pg_replslot/", "pg_serial/", "pg_stat/", "pg_stat/pgstat.stat",
		"pg_stat_tmp/", "pg_subtrans/", "pg_tblspc/", "pg_wal/", "pg_wal/archive_status/",
		"pg_xact/", "pg_xact/0000", "postgresql.auto.conf",
		"pg_tblspc/16500/PG_15_202209061/", "pg_tblspc/16500/PG_15_202209061/5/",
		"pg_tblspc/16500/PG_15_202209061/5/16600 @0", "pg_tblspc/16500/PG_15_202209061/5/16601_init @0",
		"global/pg_control",
	}
	if !slices.Equal(got, want) {
		t.Errorf("walk:\n got %q\nwant %q", got, want)
	}
	if len(spaces) != 1 || spaces[0].oid != 16500 || spaces[0].location != ts {
		t.Errorf("tablespaces %+v", spaces)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "a-fifo") {
		t.Errorf("warnings %q", warnings)
	}
}

func TestSkipLocal(t *testing.T) {
	siblings := map[string]bool{"16384": true, "16384_init": true, "16384_fsm": true, "16390": true}
	tests := []struct {
		name  string
		dbDir bool
		skip  bool
	}{
		{"16384", true, true},
		{"16384_fsm", true, true},
		{"16384.3", true, true},
		{"16384_init", true, false},
		{"16390", true, false},
		{"16384", false, false}, // only database folders hold relations
		{"t5_16384", true, true},
		{"t5_16384.1", true, true},
		{"t5_16384", false, false},
		{"pgsql_tmp", false, true},
		{"pgsql_tmp123.4", true, true},
		{"pg_internal.init", true, true},
		{"pg_internal.init.999", false, true},
		{"postmaster.pid", false, true},
		{"PG_VERSION", true, false},
		{"pg_filenode.map", true, false},
	}
	for _, tt := range tests {
		if got := skipLocal(tt.name, tt.dbDir, siblings); got != tt.skip {
			t.Errorf("skipLocal(%q, dbDir %v) = %v, want %v", tt.name, tt.dbDir, got, tt.skip)
		}
	}
}

func TestChecksummedFile(t *testing.T) {
	tests := []struct {
		rel   string
		ok    bool
		block uint32
	}{
		{"base/1/1259", true, 0},
		{"base/1/1259.2", true, 262144},
		{"base/1/1259_fsm", true, 0},
		{"global/1260", true, 0},
		{"global/pg_control", false, 0},
		{"base/1/pg_filenode.map", false, 0},
		{"base/1/PG_VERSION", false, 0},
		{"pg_tblspc/16500/PG_15_1/5/16600.1", true, 131072},
		{"pg_xact/0000", false, 0},
		{"base/1/odd.name", false, 0},
		{"base/1/1259.99999", false, 0}, // past the 32-bit block numbers
	}
	for _, tt := range tests {
		ok, block := checksummedFile(tt.rel)
		if ok != tt.ok || block != tt.block {
			t.Errorf("checksummedFile(%q) = %v, %d; want %v, %d", tt.rel, ok, block, tt.ok, tt.block)
		}
	}
}

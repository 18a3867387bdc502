package backup

import "testing"

func TestIsRelationFile(t *testing.T) {
	tests := map[string]bool{
		"base/1/1259":                             true,
		"base/16384/16385.1":                      true,
		"base/16384/16385_fsm":                    true,
		"base/16384/16385_vm":                     true,
		"base/16384/16385_init":                   true,
		"global/1262":                             true,
		"pg_tblspc/16400/PG_15_202209061/5/16401": true,
		"PG_15_202209061/5/16401.2":               true,
		"base/1/PG_VERSION":                       false,
		"base/1/pg_filenode.map":                  false,
		"global/pg_control":                       false,
		"pg_xact/0000":                            false,
		"pg_wal/000000010000000000000001":         false,
		"postgresql.conf":                         false,
		"base/1/1259_foo":                         false,
		"base/1/2/3":                              false,
		"16384":                                   false,
	}
	for p, want := range tests {
		if got := IsRelationFile(p); got != want {
			t.Errorf("IsRelationFile(%q) = %v, want %v", p, got, want)
		}
	}
}

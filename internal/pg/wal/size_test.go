package wal

import "testing"

func TestParseMemorySize(t *testing.T) {
	tests := map[string]uint64{"16MB": 16 << 20, "1GB": 1 << 30, "8192kB": 8 << 20, "1048576": 1 << 20, "1MB": 1 << 20}
	for in, want := range tests {
		if got, err := ParseMemorySize(in); err != nil || got != want {
			t.Errorf("ParseMemorySize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MB", "x16MB", "16 MB"} {
		if _, err := ParseMemorySize(bad); err == nil {
			t.Errorf("ParseMemorySize(%q) accepted", bad)
		}
	}
}

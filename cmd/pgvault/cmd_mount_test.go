package main

import "testing"

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		bad  bool
	}{
		{"512MiB", 512 << 20, false},
		{"1GiB", 1 << 30, false},
		{"1G", 1 << 30, false},
		{"64k", 64 << 10, false},
		{"10MB", 10e6, false},
		{"4096", 4096, false},
		{"1.5MiB", 3 << 19, false},
		{"", 0, true},
		{"lots", 0, true},
		{"-1", 0, true},
	}
	for _, tt := range tests {
		got, err := parseByteSize(tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d (error %v)", tt.in, got, err, tt.want, tt.bad)
		}
	}
}

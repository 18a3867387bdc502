package inode

import (
	"os"
	"syscall"
	"testing"
)

func TestHash(t *testing.T) {
	seen := map[uint64]string{}
	for _, p := range []string{"", "a", "b", "base/1/16384", "base/1/16385", "global/pg_control"} {
		ino := Hash("base", p)
		if ino <= Root || ino >= OverlayBase {
			t.Fatalf("Hash(%q) = %d: outside (1, 2^63)", p, ino)
		}
		if q, dup := seen[ino]; dup {
			t.Fatalf("%q and %q share inode %d", p, q, ino)
		}
		seen[ino] = p
		if Hash("base", p) != ino {
			t.Fatal("not deterministic")
		}
	}
	if Hash("a", "b") == Hash("ab") {
		t.Fatal("parts are not separated")
	}
}

func TestModeBits(t *testing.T) {
	for _, tt := range []struct {
		mode os.FileMode
		want uint32
	}{
		{0o700, 0o700},
		{os.ModeDir | 0o755, 0o755},
		{os.ModeSetuid | os.ModeSetgid | os.ModeSticky | 0o644, syscall.S_ISUID | syscall.S_ISGID | syscall.S_ISVTX | 0o644},
	} {
		if got := ModeBits(tt.mode); got != tt.want {
			t.Errorf("ModeBits(%v) = %o, want %o", tt.mode, got, tt.want)
		}
	}
}

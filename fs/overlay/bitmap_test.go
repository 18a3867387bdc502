package overlay

import "testing"

func TestBitmapFirstClear(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  []int64
		n    int64
		want int64
	}{
		{"empty", nil, 10, 0},
		{"none below n", nil, 0, -1},
		{"first word full", rangeOf(0, 64), 100, 64},
		{"all set", rangeOf(0, 130), 130, -1},
		{"clear past n only", rangeOf(0, 70), 70, -1},
		{"gap in the middle", append(rangeOf(0, 100), rangeOf(101, 200)...), 300, 100},
		{"beyond the words", rangeOf(0, 128), 200, 128},
	} {
		var b bitmap
		for _, i := range tc.set {
			b.set(i)
		}
		if got := b.firstClear(tc.n); got != tc.want {
			t.Errorf("%s: firstClear(%d) = %d, want %d", tc.name, tc.n, got, tc.want)
		}
		// Against the one-by-one definition.
		want := int64(-1)
		for i := int64(0); i < tc.n; i++ {
			if !b.has(i) {
				want = i
				break
			}
		}
		if got := b.firstClear(tc.n); got != want {
			t.Errorf("%s: firstClear(%d) = %d, one-by-one %d", tc.name, tc.n, got, want)
		}
	}
}

func rangeOf(first, end int64) []int64 {
	var out []int64
	for i := first; i < end; i++ {
		out = append(out, i)
	}
	return out
}

package stream

import (
	"testing"
	"time"
)

func TestSpoolAwait(t *testing.T) {
	const name = "000000010000000000000007"
	for _, tc := range []struct {
		name       string
		prefetcher bool
		marker     bool
		spoolAfter time.Duration // 0: never spooled
		want       bool
		atLeast    time.Duration
		atMost     time.Duration
	}{
		{"nothing in flight", true, false, 0, false, 0, 200 * time.Millisecond},
		{"marker without a prefetcher", false, true, 0, false, 0, 200 * time.Millisecond},
		{"in flight, arrives", true, true, 100 * time.Millisecond, true, 100 * time.Millisecond, 2 * time.Second},
		{"in flight, fails", true, true, 0, false, 100 * time.Millisecond, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := OpenSpool(t.TempDir(), "0123456789abcdef0123456789abcdef")
			if err != nil {
				t.Fatal(err)
			}
			if tc.prefetcher {
				release, err := s.LockPrefetch()
				if err != nil {
					t.Fatal(err)
				}
				defer release()
			}
			// Before the fake download starts, so that its 100 ms all
			// fall after start.
			start := time.Now()
			if tc.marker {
				done := s.startFetching(name)
				go func() {
					// The fake prefetcher's download takes 100 ms: the
					// duration under test, not a wait for a condition.
					time.Sleep(100 * time.Millisecond)
					if tc.spoolAfter > 0 {
						s.Put(name, []byte("segment"))
					}
					done()
				}()
			}
			got := s.Await(name, 10*time.Second)
			took := time.Since(start)
			if got != tc.want || took < tc.atLeast || took > tc.atMost {
				t.Fatalf("Await = %v after %v; want %v within [%v, %v]", got, took, tc.want, tc.atLeast, tc.atMost)
			}
		})
	}
}

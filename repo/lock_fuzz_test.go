package repo

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzDecodeLock decodes lock objects as Locks does: any bytes must give a
// lock of a known kind or an error, and never a panic.
func FuzzDecodeLock(f *testing.F) {
	good, _ := json.Marshal(LockInfo{Kind: LockExclusive, Purpose: "prune", Hostname: "h", PID: 1, Created: time.Unix(1, 0), Refreshed: time.Unix(2, 0)})
	f.Add(good)
	f.Add([]byte(`{"exclusive":true,"pid":-1}`))
	f.Add([]byte(`{"kind":"bogus","refreshed":"2999-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var li LockInfo
		if err := json.Unmarshal(data, &li); err != nil {
			return
		}
		_ = li.String()
		_ = li.Stale(time.Unix(1700000000, 0))
		k := li.kind()
		if k == "" {
			t.Fatal("a decoded lock has no kind")
		}
		// A lock of any kind conflicts with prune's, unless it is a
		// concurrent writer's.
		if k != LockConcurrent && !conflicts(k, LockExclusive) {
			t.Fatalf("lock kind %q does not exclude prune", k)
		}
	})
}

package repo

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLocks(t *testing.T) {
	r, _ := newTestRepo(t)
	shared1, err := r.Lock(ctx, LockShared, "backup")
	if err != nil {
		t.Fatal(err)
	}
	shared2, err := r.Lock(ctx, LockShared, "wal stream")
	if err != nil {
		t.Fatalf("second shared lock: %v", err)
	}
	_, err = r.Lock(ctx, LockExclusive, "prune")
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "shared lock for backup") && !strings.Contains(err.Error(), "shared lock for wal stream") {
		t.Fatalf("exclusive over shared: err = %v", err)
	}
	shared1.Unlock(ctx)
	shared2.Unlock(ctx)
	excl, err := r.Lock(ctx, LockExclusive, "prune")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Lock(ctx, LockShared, "backup"); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "exclusive lock for prune") {
		t.Fatalf("shared over exclusive: err = %v", err)
	}
	excl.Unlock(ctx)
	locks, _ := r.Locks(ctx)
	if len(locks) != 0 {
		t.Fatalf("locks left after unlock: %v", locks)
	}
}

func TestStaleLocks(t *testing.T) {
	r, _ := newTestRepo(t)
	now := time.Now()
	r.opts.Now = func() time.Time { return now }
	held, err := r.Lock(ctx, LockExclusive, "prune")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Unlock(ctx)
	// Not refreshed for longer than LockStaleAfter: no longer blocks.
	now = now.Add(LockStaleAfter + time.Minute)
	l, err := r.Lock(ctx, LockShared, "backup")
	if err != nil {
		t.Fatalf("stale exclusive lock still blocks: %v", err)
	}
	l.Unlock(ctx)
	removed, err := r.RemoveStaleLocks(ctx)
	if err != nil || len(removed) != 1 || removed[0].Purpose != "prune" {
		t.Fatalf("RemoveStaleLocks = %v, %v", removed, err)
	}
}

func TestLockOfDeadProcessIsStale(t *testing.T) {
	li := LockInfo{Hostname: hostname(t), PID: 1 << 30, Refreshed: time.Now()}
	if !li.Stale(time.Now()) {
		t.Fatal("lock of a process that does not exist is not stale")
	}
	li.PID = 1 // init is always alive
	if li.Stale(time.Now()) {
		t.Fatal("lock of a live process is stale")
	}
}

func TestConcurrentLocksExcludeNothing(t *testing.T) {
	r, _ := newTestRepo(t)
	stream, err := r.Lock(ctx, LockConcurrent, "wal stream")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Unlock(ctx)
	prune, err := r.Lock(ctx, LockExclusive, "prune")
	if err != nil {
		t.Fatalf("a concurrent writer's lock blocked prune: %v", err)
	}
	push, err := r.Lock(ctx, LockConcurrent, "wal push")
	if err != nil {
		t.Fatalf("prune blocked a concurrent writer: %v", err)
	}
	push.Unlock(ctx)
	if _, err := r.Lock(ctx, LockShared, "backup"); !errors.Is(err, ErrLocked) {
		t.Fatalf("backup during prune: %v", err)
	}
	prune.Unlock(ctx)
}

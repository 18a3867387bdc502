package repo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/pgvault/pgvault/repo/backend"
)

const lockLabel = "lock"

// Lock timing: a live holder rewrites its lock every LockRefresh; a lock
// not refreshed for LockStaleAfter is stale (its holder died or lost the
// repository) and no longer blocks anyone.
const (
	LockRefresh    = 5 * time.Minute
	LockStaleAfter = 30 * time.Minute
)

// LockKind says what a lock excludes.
type LockKind string

const (
	// LockShared is taken by writers that deduplicate against the whole
	// repository (backup) and by checks: they exclude prune.
	LockShared LockKind = "shared"
	// LockExclusive is taken by prune and rebuild-index: it excludes
	// shared and exclusive locks.
	LockExclusive LockKind = "exclusive"
	// LockConcurrent is taken by writers that never stop (wal stream) or
	// run at any moment (wal push). It excludes nothing: such writers open
	// the repository with Options.ConcurrentWriter, reuse only blobs they
	// wrote themselves within ReuseWindow, and prune never touches packs
	// younger than its grace period, which is longer than that window.
	LockConcurrent LockKind = "concurrent"
)

// LockInfo is the content of a lock object.
type LockInfo struct {
	Name      string    `json:"-"`
	Kind      LockKind  `json:"kind"`
	Exclusive bool      `json:"exclusive"` // kept for readers of format version 1 locks
	Purpose   string    `json:"purpose"`
	Hostname  string    `json:"hostname"`
	PID       int       `json:"pid"`
	Created   time.Time `json:"created"`
	Refreshed time.Time `json:"refreshed"`
}

// Stale reports whether the lock no longer counts: not refreshed for too
// long, or held by a process on this host that no longer exists.
func (l LockInfo) Stale(now time.Time) bool {
	if now.Sub(l.Refreshed) > LockStaleAfter {
		return true
	}
	host, _ := os.Hostname()
	if l.Hostname == host && l.PID > 0 {
		if err := syscall.Kill(l.PID, 0); errors.Is(err, syscall.ESRCH) {
			return true
		}
	}
	return false
}

func (l LockInfo) kind() LockKind {
	switch {
	case l.Kind != "":
		return l.Kind
	case l.Exclusive:
		return LockExclusive
	}
	return LockShared
}

func (l LockInfo) String() string {
	return fmt.Sprintf("%s lock for %s by pid %d on %s since %s", l.kind(), l.Purpose, l.PID, l.Hostname, l.Created.Format(time.RFC3339))
}

// conflicts reports whether two locks exclude each other.
func conflicts(a, b LockKind) bool {
	if a == LockConcurrent || b == LockConcurrent {
		return false
	}
	return a == LockExclusive || b == LockExclusive
}

// Lock is a held lock; Unlock releases it.
type Lock struct {
	r    *Repository
	info LockInfo
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Locks lists the lock objects in the repository.
func (r *Repository) Locks(ctx context.Context) ([]LockInfo, error) {
	var names []string
	if err := r.be.List(ctx, backend.LockFile, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list locks: %w", err)
	}
	var out []LockInfo
	for _, name := range names {
		var plain []byte
		err := readAuthentic(ctx, r.log, "lock "+name, func(ctx context.Context) error {
			sealed, err := r.be.Load(ctx, backend.Handle{Type: backend.LockFile, Name: name}, 0, 0)
			if err != nil {
				return fmt.Errorf("load lock %s: %w", name, err)
			}
			plain, err = r.codec.OpenMeta(lockLabel, sealed)
			return err
		})
		if errors.Is(err, backend.ErrNotFound) {
			continue // released while we listed
		}
		if err != nil && !isDamage(err) {
			return nil, err
		}
		if err != nil {
			// A damaged lock must not block forever: treat it as stale.
			out = append(out, LockInfo{Name: name, Purpose: "unreadable lock"})
			continue
		}
		var li LockInfo
		if err := json.Unmarshal(plain, &li); err != nil {
			out = append(out, LockInfo{Name: name, Purpose: "unreadable lock"})
			continue
		}
		li.Name = name
		out = append(out, li)
	}
	return out, nil
}

// Lock takes a lock of the given kind. It fails with ErrLocked, naming
// the holder, when a live conflicting lock exists. The lock is refreshed
// in the background until Unlock.
func (r *Repository) Lock(ctx context.Context, kind LockKind, purpose string) (*Lock, error) {
	host, _ := os.Hostname()
	var rnd [16]byte
	rand.Read(rnd[:])
	now := r.Now().UTC()
	l := &Lock{r: r, info: LockInfo{
		Name: hex.EncodeToString(rnd[:]), Kind: kind, Exclusive: kind == LockExclusive, Purpose: purpose,
		Hostname: host, PID: os.Getpid(), Created: now, Refreshed: now,
	}}
	if err := r.checkLocks(ctx, l.info); err != nil {
		return nil, err
	}
	if err := l.write(ctx, l.info); err != nil {
		return nil, err
	}
	// Two processes can pass the first check together; looking again after
	// writing our own lock makes one of them see the other.
	if err := r.checkLocks(ctx, l.info); err != nil {
		l.remove(context.WithoutCancel(ctx))
		return nil, err
	}
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go l.refreshLoop()
	return l, nil
}

func (r *Repository) checkLocks(ctx context.Context, mine LockInfo) error {
	locks, err := r.Locks(ctx)
	if err != nil {
		return err
	}
	now := r.Now()
	for _, other := range locks {
		if other.Name == mine.Name || other.Purpose == "unreadable lock" || other.Stale(now) {
			continue
		}
		if conflicts(mine.kind(), other.kind()) {
			return fmt.Errorf("%w: %s (wait for it to finish; if that process is gone, the lock expires %s after its last refresh)",
				ErrLocked, other, LockStaleAfter)
		}
	}
	return nil
}

func (l *Lock) write(ctx context.Context, info LockInfo) error {
	plain, err := json.Marshal(info)
	if err != nil {
		return err
	}
	sealed := l.r.codec.SealMeta(nil, lockLabel, plain)
	if err := l.r.be.Save(ctx, backend.Handle{Type: backend.LockFile, Name: l.info.Name}, sealed); err != nil {
		return fmt.Errorf("write lock: %w", err)
	}
	return nil
}

func (l *Lock) remove(ctx context.Context) error {
	err := l.r.be.Remove(ctx, backend.Handle{Type: backend.LockFile, Name: l.info.Name})
	if err != nil && !errors.Is(err, backend.ErrNotFound) {
		return fmt.Errorf("remove lock: %w", err)
	}
	return nil
}

func (l *Lock) refreshLoop() {
	defer close(l.done)
	t := time.NewTicker(LockRefresh)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			info := l.info // a copy: Info() may read l.info meanwhile
			info.Refreshed = l.r.Now().UTC()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := l.write(ctx, info); err != nil {
				l.r.log.Warn("could not refresh repository lock", "err", err)
			}
			cancel()
		}
	}
}

// Info describes the held lock.
func (l *Lock) Info() LockInfo { return l.info }

// Unlock stops refreshing and removes the lock object.
func (l *Lock) Unlock(ctx context.Context) error {
	var err error
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		err = l.remove(ctx)
	})
	return err
}

// RemoveStaleLocks deletes locks that are stale and returns them.
func (r *Repository) RemoveStaleLocks(ctx context.Context) ([]LockInfo, error) {
	locks, err := r.Locks(ctx)
	if err != nil {
		return nil, err
	}
	var removed []LockInfo
	for _, l := range locks {
		if l.Purpose == "unreadable lock" || l.Stale(r.Now()) {
			if err := r.be.Remove(ctx, backend.Handle{Type: backend.LockFile, Name: l.Name}); err != nil && !errors.Is(err, backend.ErrNotFound) {
				return removed, fmt.Errorf("remove stale lock %s: %w", l.Name, err)
			}
			removed = append(removed, l)
		}
	}
	return removed, nil
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/internal/service"
	"github.com/pgvault/pgvault/repo"
)

// worker runs the site's jobs one at a time: base backup, retention, WAL
// check and drill, in that order of priority when several are due. One
// worker per site is what guarantees that a site never takes two
// backups at once and never prunes during its own backup.
func (s *site) worker(ctx context.Context) {
	cfg := s.config()
	clock := s.a.clock
	var lastPrune, lastCheck, backupRetry, pruneRetry, lastSynthetic time.Time
	s.mu.Lock()
	lastDrill := s.lastDrill
	if st := s.st.Synthetic.Last; st != nil {
		lastSynthetic = *st
	}
	s.mu.Unlock()
	waitingForSlot := false
	for ctx.Err() == nil {
		now := clock.Now()
		s.mu.Lock()
		known, slotReady, count, writeOnly := s.summaryKnown, s.slotReady, s.st.Backup.Count, s.st.WriteOnly
		var lastBackup time.Time
		if s.st.Backup.Last != nil {
			lastBackup = s.st.Backup.Last.Start
		}
		s.mu.Unlock()

		nb, okB := cfg.Schedule().Next(lastBackup, now)
		okB = okB && known // the schedule continues from the repository's newest backup
		if backupRetry.After(nb) {
			nb = backupRetry
		}
		policy := cfg.Retention.Policy()
		np, okP := every(cfg.Retention.Interval.D, lastPrune, now)
		okP = okP && !policy.IsZero() && !writeOnly
		if pruneRetry.After(np) {
			np = pruneRetry
		}
		nc, okC := every(cfg.WALCheck.Interval.D, lastCheck, now)
		nd, okD := every(cfg.Drill.Every(), lastDrill, now)
		okD = okD && count > 0 && !writeOnly
		ns, okS := every(cfg.Synthetic.Interval.D, lastSynthetic, now)
		okS = okS && count > 0 && known && !writeOnly
		s.setNext(okB, nb, okP, np, okC, nc, okD, nd)
		s.setNextSynthetic(okS, ns)
		due := func(ok bool, t time.Time) bool { return ok && !t.After(now) }
		maint := false
		if due(okB, nb) || due(okP, np) || due(okD, nd) || due(okS, ns) {
			maint = s.maintenance()
		}
		wait := maxWait
		// A backup in stream mode waits for the streamer's slot: WAL from
		// the backup's start must not be lost to the archive. The other
		// jobs go on meanwhile.
		backupBlocked := due(okB, nb) && !maint && cfg.Mode == "stream" && !slotReady
		if backupBlocked {
			if !waitingForSlot {
				s.log.Info("base backup due; waiting for the WAL streamer to connect first")
				s.update(func(st *SiteState) {
					st.Backup.LastError = "due, waiting for the WAL streamer to connect first (see streamer.last_error), so that no WAL the backup needs is missed"
				})
				waitingForSlot = true
			}
			wait = slotWaitPoll
		}
		switch {
		case due(okB, nb) && !maint && !backupBlocked:
			waitingForSlot = false
			if err := s.runBackup(ctx); err != nil {
				s.mu.Lock()
				s.jobBackoff = backoff(s.jobBackoff, jobRetryMin, jobRetryMax)
				d := s.jobBackoff
				s.mu.Unlock()
				if iv := cfg.Schedule().Interval; iv > 0 && iv < d {
					d = iv
				}
				backupRetry = clock.Now().Add(d)
				continue
			}
			s.mu.Lock()
			s.jobBackoff = 0
			s.mu.Unlock()
			backupRetry = time.Time{}
			if !policy.IsZero() && !writeOnly {
				if err := s.runPrune(ctx); err == nil {
					lastPrune, pruneRetry = clock.Now(), time.Time{}
				} else {
					pruneRetry = clock.Now().Add(jobRetryMin)
				}
			}
			s.refresh(ctx)
			continue
		case due(okP, np) && !maint:
			if err := s.runPrune(ctx); err != nil {
				s.mu.Lock()
				s.pruneBackoff = backoff(s.pruneBackoff, jobRetryMin, jobRetryMax)
				pruneRetry = clock.Now().Add(min(s.pruneBackoff, cfg.Retention.Interval.D))
				s.mu.Unlock()
			} else {
				s.mu.Lock()
				s.pruneBackoff = 0
				s.mu.Unlock()
				lastPrune, pruneRetry = clock.Now(), time.Time{}
				s.askRefresh()
			}
			continue
		case due(okS, ns) && !maint:
			// A failure waits for the next interval (the alert says why):
			// a replay that failed once fails the same way at once.
			if err := s.runSynthetic(ctx); err == nil {
				s.refresh(ctx)
				if !policy.IsZero() {
					if err := s.runPrune(ctx); err == nil {
						lastPrune, pruneRetry = clock.Now(), time.Time{}
					}
				}
			}
			lastSynthetic = clock.Now()
			s.mu.Lock()
			lastDrill = s.lastDrill
			s.mu.Unlock()
			continue
		case due(okC, nc):
			s.runWALCheck(ctx)
			lastCheck = clock.Now()
			continue
		case due(okD, nd) && !maint:
			s.runDrill(ctx)
			lastDrill = clock.Now()
			continue
		case maint:
			wait = maintenancePoll
		default:
			for _, n := range []struct {
				ok bool
				t  time.Time
			}{{okB && !backupBlocked, nb}, {okP, np}, {okC, nc}, {okD, nd}, {okS, ns}} {
				if n.ok {
					wait = min(wait, n.t.Sub(now))
				}
			}
			if !known {
				wait = min(wait, slotWaitPoll)
			}
		}
		if wait <= 0 {
			continue
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		case <-s.wake:
			timer.Stop()
		}
	}
}

// runBackup takes one base backup and records the outcome.
func (s *site) runBackup(ctx context.Context) error {
	start := s.a.clock.Now().UTC()
	s.update(func(st *SiteState) { st.Backup.Running, st.Backup.LastAttempt = true, &start })
	s.a.metrics.backupRunning.WithLabelValues(s.name).Set(1)
	s.log.Info("base backup starting")
	info, err := s.takeBackup(ctx)
	s.a.metrics.backupRunning.WithLabelValues(s.name).Set(0)
	s.update(func(st *SiteState) {
		st.Backup.Running = false
		if err == nil {
			st.Backup.Last, st.Backup.LastError = info, ""
			st.Backup.Count++
			st.Backup.Taken++
		} else if ctx.Err() == nil {
			st.Backup.LastError = err.Error()
		}
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.a.metrics.backupFailures.WithLabelValues(s.name).Inc()
		s.log.Error("base backup failed", "err", err)
		return err
	}
	s.setLastBackupMetrics(info)
	s.log.Info("base backup taken", "id", info.ID, "seconds", fmt.Sprintf("%.1f", info.Seconds), "bytes", info.Bytes, "stored_bytes", info.StoredBytes)
	return nil
}

func (s *site) takeBackup(ctx context.Context) (*service.BackupInfo, error) {
	cfg := s.config()
	var used node
	connect := func(ctx context.Context) (*pgconn.PgConn, *pgconn.Config, error) {
		conn, n, err := s.connectAny(ctx, purposeBackup)
		used = n
		return conn, n.cfg, err
	}
	rep, err := s.service().Backup(ctx, connect, service.BackupOptions{
		Label:          fmt.Sprintf("agent %s %s", s.name, s.a.clock.Now().UTC().Format(time.RFC3339)),
		FastCheckpoint: cfg.Basebackup.FastCheckpoint,
		MaxRateKB:      cfg.Basebackup.MaxRateKB,
		Method:         backup.Method(cfg.Basebackup.Method),
		DataDir:        cfg.Basebackup.DataDir,
		Holder:         "agent backup of site " + s.name,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		err = s.repoFailed(err)
		if name := Classify(err); name != "" && used.cfg != nil {
			s.a.alerts.Raise(s.name, name, used.source(), err.Error())
		}
		return nil, fmt.Errorf("base backup: %w", err)
	}
	s.a.alerts.Clear(s.name, AlertConfiguration, "repository")
	info := rep.Backup.Info
	s.mu.Lock()
	s.repoIdentity = repoIdentity{systemID: info.SystemIdentifier, major: pg.Major(info.ServerVersion)}
	s.mu.Unlock()
	return service.InfoOf(rep.Backup), nil
}

// runPrune applies the retention policy with an exclusive lock: no
// backup (ours or anyone's) runs meanwhile; the streamer goes on, as
// docs/explanation/prune.md explains.
func (s *site) runPrune(ctx context.Context) error {
	cfg := s.config()
	rep, err := s.prune(ctx, cfg)
	now := s.a.clock.Now().UTC()
	if errors.Is(err, repo.ErrWriteOnly) {
		// Learnt before any read handle was open; not a failure.
		s.noteKey(true)
		return nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.Error("retention failed", "err", err)
		s.update(func(st *SiteState) { st.Prune.LastError = err.Error() })
		return err
	}
	removed := 0
	for _, d := range rep.Backups {
		if !d.Keep {
			removed++
		}
	}
	var freed int64
	var packs int
	if rep.Repo != nil {
		freed, packs = rep.Repo.BytesFreed, rep.Repo.PacksDeleted
	}
	s.a.metrics.pruneLast.WithLabelValues(s.name).Set(unix(now))
	s.a.metrics.pruneFreed.WithLabelValues(s.name).Add(float64(freed))
	s.update(func(st *SiteState) {
		st.Prune.Last, st.Prune.LastError = &now, ""
		st.Prune.BackupsRemoved, st.Prune.WALRemoved, st.Prune.BytesFreed, st.Prune.PacksDeleted = removed, len(rep.WALDropped), freed, packs
		st.Prune.Runs++
	})
	if removed > 0 || freed > 0 {
		s.log.Info("retention applied", "backups_removed", removed, "wal_removed", len(rep.WALDropped), "bytes_freed", freed, "packs_deleted", packs)
	}
	return nil
}

func (s *site) prune(ctx context.Context, cfg *Site) (*backup.PruneReport, error) {
	defer s.readerStale.Store(true) // the read handle's index may name deleted packs
	rep, err := s.service().Prune(ctx, service.PruneOptions{
		Policy: cfg.Retention.Policy(), Apply: true, Grace: cfg.Retention.Grace.D, Holder: "agent prune of site " + s.name,
	})
	if err != nil {
		return nil, s.repoFailed(err)
	}
	return rep, nil
}

// runWALCheck is `pgvault wal check`: from the oldest backup's start to
// the newest WAL stored. A gap starts the wal_gap alert; a check without
// one ends it.
func (s *site) runWALCheck(ctx context.Context) {
	var rep *service.WALCheckReport
	err := s.withReader(ctx, func(r *repo.Repository) error {
		var err error
		rep, err = service.CheckWAL(ctx, r)
		return err
	})
	if ctx.Err() != nil {
		return
	}
	now := s.a.clock.Now().UTC()
	m := s.a.metrics
	if err != nil {
		s.log.Warn("WAL check could not run", "err", err)
		s.update(func(st *SiteState) { st.WALCheck.LastError = err.Error() })
		return
	}
	missing := len(rep.Missing) + len(rep.MissingHistory)
	m.walCheckLast.WithLabelValues(s.name).Set(unix(now))
	m.walMissing.WithLabelValues(s.name).Set(float64(len(rep.Missing)))
	first := ""
	switch {
	case len(rep.Missing) > 0:
		first = rep.Missing[0]
	case len(rep.MissingHistory) > 0:
		first = rep.MissingHistory[0]
	}
	s.update(func(st *SiteState) {
		st.WALCheck = WALCheckState{Last: &now, OK: rep.OK, Missing: missing, FirstMissing: first, From: rep.From, To: rep.To, Next: st.WALCheck.Next}
	})
	if rep.OK {
		s.a.alerts.Clear(s.name, AlertWALGap, "wal check")
		return
	}
	s.a.alerts.Raise(s.name, AlertWALGap, "wal check", rep.Gaps())
}

// setNextSynthetic records when the synthetic backup is due next.
func (s *site) setNextSynthetic(ok bool, t time.Time) {
	var next *time.Time
	if ok {
		next = timePtr(t)
	}
	s.mu.Lock()
	old := s.st.Synthetic.Next
	changed := (old == nil) != (next == nil) || old != nil && !old.Equal(*next)
	s.st.Synthetic.Next = next
	s.mu.Unlock()
	if changed {
		s.a.changed()
	}
}

// setNext records when each job is due next, if that changed.
func (s *site) setNext(okB bool, nb time.Time, okP bool, np time.Time, okC bool, nc time.Time, okD bool, nd time.Time) {
	opt := func(ok bool, t time.Time) *time.Time {
		if !ok {
			return nil
		}
		return timePtr(t)
	}
	same := func(a, b *time.Time) bool { return (a == nil) == (b == nil) && (a == nil || a.Equal(*b)) }
	b, p, c, d := opt(okB, nb), opt(okP, np), opt(okC, nc), opt(okD, nd)
	s.mu.Lock()
	st := &s.st
	changed := !same(st.Backup.Next, b) || !same(st.Prune.Next, p) || !same(st.WALCheck.Next, c) || !same(st.Drill.Next, d)
	st.Backup.Next, st.Prune.Next, st.WALCheck.Next, st.Drill.Next = b, p, c, d
	s.mu.Unlock()
	if changed {
		s.a.changed()
	}
}

package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgvault/pgvault/backup"
	pgfs "github.com/pgvault/pgvault/fs"
	"github.com/pgvault/pgvault/fs/chunkread"
	"github.com/pgvault/pgvault/fs/verify"
	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/internal/pg/wal"
)

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Ref names the backup (an ID, a prefix, "" or "latest").
	Ref string
	// Recovery is the recovery target, timeline and action to verify.
	Recovery wal.RecoveryConfig
	// Boot starts PostgreSQL on an instant mount of the backup and checks
	// it; without it every chunk the backup and its WAL need is read and
	// authenticated.
	Boot bool
	// The boot's settings (see verify.BootOptions).
	PGBin, Owner, DBUser, AmCheck, SQL string
	ServerSettings                     []string
	Timeout                            time.Duration
	Keep                               bool
	CacheSize                          int64
	// Progress reports bytes read (chunks mode).
	Progress func(done, total int64)
	// Phase, if set, is told when each phase of a boot starts (mount,
	// start, recovery, amcheck, sql, stop).
	Phase func(phase string)
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	ID       string              `json:"id"`
	Mode     string              `json:"mode"` // chunks or boot
	OK       bool                `json:"ok"`
	Target   wal.Target          `json:"target"`
	Problems []verify.Problem    `json:"problems"`
	Chunks   *verify.ChunkReport `json:"chunks,omitempty"`
	Boot     *verify.BootReport  `json:"boot,omitempty"`
	Plan     *backup.RestorePlan `json:"plan,omitempty"`
	Seconds  float64             `json:"seconds"`
}

// Problem is the *Problems error of a verify that found problems, or nil.
func (v *VerifyReport) Problem() error {
	if v.OK {
		return nil
	}
	return problemsf("verify of backup %s found %d problems; first: %s", ShortID(v.ID), len(v.Problems), v.Problems[0])
}

// Verify proves a backup restores (see VerifyOptions.Boot). WAL missing
// for the target is a *Problems error; so is anything the check finds,
// which the report lists too.
func (s *Site) Verify(ctx context.Context, o VerifyOptions) (*VerifyReport, error) {
	start := time.Now()
	rc := o.Recovery
	var owner verify.OSUser
	if o.Boot {
		var err error
		if owner, err = bootHost(o.Owner); err != nil {
			return nil, err
		}
	}
	r, err := s.openCached(ctx, o.CacheSize, "verify")
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cat, err := LoadCatalog(ctx, r)
	if err != nil {
		return nil, err
	}
	plan, snap, err := cat.PlanRestore(backup.PlanInput{Ref: o.Ref, Target: rc.Target, Timeline: rc.Timeline})
	if errors.Is(err, backup.ErrWALMissing) {
		return nil, problemsf("verify: %v", err)
	}
	if err != nil {
		return nil, err
	}
	rep := &VerifyReport{ID: snap.ID, Target: rc.Target, Plan: plan}
	if !o.Boot {
		rep.Mode = "chunks"
		cr, err := verify.Chunks(ctx, r, snap, verify.ChunkOptions{WAL: walFiles(plan), SegmentSize: plan.SegmentSize, Progress: o.Progress})
		if err != nil {
			return nil, err
		}
		rep.Chunks, rep.Problems = cr, cr.Problems
	} else {
		rep.Mode = "boot"
		bin, err := verify.FindPGBin(o.PGBin, pg.Major(plan.Backup.Info.ServerVersion))
		if err != nil {
			return nil, err
		}
		bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
		defer stopBG()
		br, err := verify.Boot(ctx, r, snap, verify.BootOptions{
			Owner: owner, PGBin: bin, Recovery: rc, SegmentSize: plan.SegmentSize, Settings: []wal.Setting{{Name: "archive_mode", Value: "off"}},
			ServerSettings: o.ServerSettings, SQL: o.SQL, AmCheck: o.AmCheck, DBUser: o.DBUser, Timeout: o.Timeout,
			Keep: o.Keep, Prefetcher: chunkread.NewPrefetcher(bg, r, 8, 16), Logger: s.log(),
			Progress: func(p string) {
				s.log().Info("verify", "phase", p)
				if o.Phase != nil {
					o.Phase(p)
				}
			},
		})
		if err != nil {
			return nil, err
		}
		rep.Boot, rep.Problems = br, br.Problems
	}
	rep.OK = len(rep.Problems) == 0
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// bootHost checks that this host can boot PostgreSQL on an instant mount
// (FUSE) as the OS user named owner, and returns that user.
func bootHost(owner string) (verify.OSUser, error) {
	u, err := verify.LookupUser(owner)
	if err != nil {
		return u, fmt.Errorf("%w: %v", ErrUnknownUser, err)
	}
	return u, pgfs.CheckFUSE()
}

// walFiles lists the WAL files a plan's recovery reads: its history files
// and every segment (the streamer's .partial where only that holds it).
func walFiles(plan *backup.RestorePlan) []verify.WALFile {
	var files []verify.WALFile
	for _, h := range plan.HistoryFiles {
		if f, err := wal.ParseFileName(h, plan.SegmentSize); err == nil {
			files = append(files, verify.WALFile{Timeline: f.Timeline, Name: h})
		}
	}
	partial := map[string]bool{}
	for _, p := range plan.Partial {
		partial[p] = true
	}
	for _, run := range plan.WAL {
		for _, sg := range run.Segments() {
			name := sg.Name(plan.SegmentSize)
			if pn := sg.PartialName(plan.SegmentSize); partial[pn] {
				name = pn // only the streamer's partial file holds it
			}
			files = append(files, verify.WALFile{Timeline: sg.Timeline, Name: name})
		}
	}
	return files
}

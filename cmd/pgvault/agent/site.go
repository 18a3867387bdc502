package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/internal/redact"
	"github.com/pgvault/pgvault/internal/service"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/stream"
)

// Timing of the site's loops.
const (
	// maintenancePoll is how often a due job looks again whether the
	// maintenance-mode file is gone.
	maintenancePoll = time.Second
	// maxWait bounds the worker's sleep, so that it notices a changed
	// clock or maintenance-mode file even between jobs.
	maxWait = 30 * time.Second
	// slotWaitPoll is how often a due backup in stream mode looks whether
	// the streamer has connected (and so holds its slot) yet.
	slotWaitPoll = 500 * time.Millisecond
	// Backoffs after failures.
	streamerRetryMin = time.Second
	streamerRetryMax = time.Minute
	jobRetryMin      = 30 * time.Second
	jobRetryMax      = 30 * time.Minute
)

// repoIdentity is the cluster the repository's newest backup is of.
type repoIdentity struct {
	systemID string
	major    int
}

// part is a restartable goroutine tree of a site.
type part struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (p *part) stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	<-p.done
	p.cancel, p.done = nil, nil
}

// site supervises one site: its streamer (one part) and its jobs and
// repository figures (the other part). Each part restarts alone when a
// reload changes what it depends on.
type site struct {
	a    *Agent
	name string
	log  *slog.Logger

	mu            sync.Mutex // guards the fields below
	cfg           *Site
	nodeList      []node
	st            SiteState
	repoIdentity  repoIdentity
	summaryKnown  bool // the repository has been read since the jobs started
	slotReady     bool // the streamer connected, so its slot holds WAL
	lastDrill     time.Time
	lastArchived  time.Time
	jobBackoff    time.Duration
	pruneBackoff  time.Duration
	streamerParts int

	readerMu    sync.Mutex
	reader      *repo.Repository
	readerStale atomic.Bool

	wake       chan struct{}
	refreshNow chan struct{}

	stream part
	jobs   part
}

func newSite(a *Agent, cfg *Site, prev *SiteState) (*site, error) {
	nodes, err := parseNodes(cfg)
	if err != nil {
		return nil, err
	}
	s := &site{
		a: a, name: cfg.Name, log: a.log.With("site", cfg.Name), cfg: cfg, nodeList: nodes,
		wake: make(chan struct{}, 1), refreshNow: make(chan struct{}, 1),
	}
	s.st = SiteState{Alerts: []Alert{}}
	if prev != nil {
		s.st.Drill = prev.Drill
		if prev.Drill.Last != nil {
			s.lastDrill = *prev.Drill.Last
		}
	}
	s.setStatic()
	a.metrics.initSite(s.name)
	if s.st.Drill.OK != nil && s.st.Drill.Enabled {
		a.metrics.drillSuccess.WithLabelValues(s.name).Set(boolGauge(*s.st.Drill.OK))
		if s.st.Drill.Last != nil {
			a.metrics.drillLast.WithLabelValues(s.name).Set(unix(*s.st.Drill.Last))
		}
	}
	return s, nil
}

// setStatic copies the configuration facts into the state.
func (s *site) setStatic() {
	cfg := s.cfg
	s.st.Active, s.st.Mode, s.st.Repo = cfg.IsActive(), cfg.Mode, redact.URL(cfg.Repo)
	s.st.Drill.Enabled = cfg.IsActive() && cfg.Drill.Every() > 0
	s.st.Synthetic.Enabled = cfg.IsActive() && cfg.Synthetic.Interval.D > 0
	if cfg.Mode == "stream" && cfg.IsActive() {
		if s.st.Streamer == nil {
			s.st.Streamer = &StreamerState{}
		}
	} else {
		s.st.Streamer = nil
	}
}

func (s *site) config() *Site {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

func (s *site) nodes() []node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nodeList
}

// update changes the state under the lock and asks for a state file write.
func (s *site) update(f func(st *SiteState)) {
	s.mu.Lock()
	f(&s.st)
	s.mu.Unlock()
	s.a.changed()
}

// snapshot copies the state for the state document.
func (s *site) snapshot() *SiteState {
	s.mu.Lock()
	st := s.st
	if s.st.Streamer != nil {
		c := *s.st.Streamer
		st.Streamer = &c
	}
	if s.st.Backup.Last != nil {
		c := *s.st.Backup.Last
		st.Backup.Last = &c
	}
	if s.st.Server != nil {
		c := *s.st.Server
		st.Server = &c
	}
	if s.st.RepoStats != nil {
		c := *s.st.RepoStats
		st.RepoStats = &c
	}
	if s.st.PITR != nil {
		c := *s.st.PITR
		st.PITR = &c
	}
	s.mu.Unlock()
	st.Alerts = s.a.alerts.Active(s.name)
	return &st
}

// start launches both parts under ctx.
func (s *site) start(ctx context.Context) {
	s.cleanAlerts()
	s.startStream(ctx)
	s.startJobs(ctx)
}

// stop ends both parts: the streamer stores what it received first.
func (s *site) stop() {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.stream.stop() }()
	go func() { defer wg.Done(); s.jobs.stop() }()
	wg.Wait()
	s.closeReader()
}

// streamKey is what the streamer depends on.
func streamKey(c *Site) any {
	return struct {
		PG                       Nodes
		Repo, Mode, Slot, App    string
		Active, Synchronous      bool
		Level, Limit             int
		CacheDir                 string
		RepoPassword, PGPassword string
	}{c.PG, c.Repo, c.Mode, c.Slot, c.ApplicationName, c.IsActive(), c.Synchronous,
		c.CompressionLevel, c.UploadRetriesWarningLimit, c.CacheDir, c.Secrets.RepoPassword, c.Secrets.PGPassword}
}

// reconfigure applies a reloaded configuration: the streamer restarts
// only if what it depends on changed, the jobs if anything did.
func (s *site) reconfigure(ctx context.Context, cfg *Site) error {
	nodes, err := parseNodes(cfg)
	if err != nil {
		return err
	}
	old := s.config()
	streamChanged := !reflect.DeepEqual(streamKey(old), streamKey(cfg))
	jobsChanged := !reflect.DeepEqual(old, cfg)
	if !streamChanged && !jobsChanged {
		return nil
	}
	s.log.Info("configuration changed", "restart_streamer", streamChanged, "restart_jobs", jobsChanged)
	if streamChanged {
		s.stream.stop()
	}
	if jobsChanged {
		s.jobs.stop()
		s.closeReader()
	}
	s.mu.Lock()
	s.cfg, s.nodeList = cfg, nodes
	if streamChanged {
		s.slotReady = false
	}
	s.setStatic()
	s.mu.Unlock()
	s.cleanAlerts()
	s.a.changed()
	if streamChanged {
		s.startStream(ctx)
	}
	if jobsChanged {
		s.startJobs(ctx)
	}
	return nil
}

// cleanAlerts ends alerts whose sources this configuration no longer has
// (a node removed, drills turned off, the site made inactive): nothing
// would ever check them again.
func (s *site) cleanAlerts() {
	cfg := s.config()
	valid := map[string]bool{}
	if cfg.IsActive() {
		for _, n := range s.nodes() {
			valid[n.source()] = true
		}
		valid["repository"], valid["backend"], valid["wal check"] = true, true, true
		if cfg.Mode == "stream" {
			valid["streamer"] = true
		}
		if cfg.Drill.Every() > 0 {
			valid["drill"], valid["binaries"] = true, true
		}
	}
	s.a.alerts.ClearSources(s.name, func(_, src string) bool { return !valid[src] })
}

func (s *site) startStream(parent context.Context) {
	cfg := s.config()
	if !cfg.IsActive() || cfg.Mode != "stream" {
		return
	}
	ctx, cancel := context.WithCancel(parent)
	done := make(chan struct{})
	s.stream = part{cancel: cancel, done: done}
	go func() {
		defer close(done)
		s.superviseStreamer(ctx)
	}()
}

func (s *site) startJobs(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	done := make(chan struct{})
	s.jobs = part{cancel: cancel, done: done}
	s.mu.Lock()
	s.summaryKnown = false
	s.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.statsLoop(ctx) }()
	if s.config().IsActive() {
		wg.Add(1)
		go func() { defer wg.Done(); s.worker(ctx) }()
	}
	go func() { wg.Wait(); close(done) }()
}

// superviseStreamer runs stream.Run and restarts it, with backoff, when it
// fails: stream.Run reconnects by itself and returns only for failures
// reconnecting cannot fix (which alerts report) or when ctx ends.
func (s *site) superviseStreamer(ctx context.Context) {
	backoff := streamerRetryMin
	for {
		s.update(func(st *SiteState) {
			if st.Streamer != nil {
				st.Streamer.Running, st.Streamer.RetryAfter = true, nil
			}
		})
		started := time.Now()
		err := s.streamOnce(ctx)
		s.a.metrics.streamerConnected.WithLabelValues(s.name).Set(0)
		if ctx.Err() != nil {
			s.update(func(st *SiteState) {
				if st.Streamer != nil {
					st.Streamer.Running, st.Streamer.Connected = false, false
				}
			})
			return
		}
		if err == nil {
			err = errors.New("the WAL streamer stopped")
		}
		if time.Since(started) > 2*streamerRetryMax {
			backoff = streamerRetryMin
		}
		// Connection failures started their alerts in connect (per node);
		// what is left are the streamer's own: a lost slot, a timeline
		// the repository does not follow.
		var pgErr *pgconn.PgError
		if name := Classify(err); name != "" && !errors.As(err, &pgErr) {
			s.a.alerts.Raise(s.name, name, "streamer", err.Error())
		}
		retry := time.Now().Add(backoff).UTC()
		s.a.metrics.streamerRestarts.WithLabelValues(s.name).Inc()
		s.update(func(st *SiteState) {
			if st.Streamer != nil {
				st.Streamer.Running, st.Streamer.Connected = false, false
				st.Streamer.Restarts++
				st.Streamer.LastError = err.Error()
				st.Streamer.RetryAfter = &retry
			}
		})
		s.log.Error("WAL streamer failed; restarting", "err", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, streamerRetryMax)
	}
}

func (s *site) streamOnce(ctx context.Context) error {
	cfg := s.config()
	var nodes []stream.Node
	for _, n := range s.nodes() {
		nodes = append(nodes, stream.Node{Name: n.name, Connect: func(ctx context.Context) (*pgconn.PgConn, error) {
			return s.connect(ctx, n, purposeStream)
		}})
	}
	err := s.service().StreamWAL(ctx, nodes, service.StreamOptions{
		StreamOptions: stream.StreamOptions{Slot: cfg.Slot, Synchronous: cfg.Synchronous, OnStatus: s.onStreamStatus},
		Holder:        "agent wal stream of site " + s.name,
		Opened:        s.learnIdentity,
	})
	if err != nil && ctx.Err() == nil {
		err = s.repoFailed(err)
	}
	return err
}

// learnIdentity reads which cluster the repository holds before the
// streamer's first connection (connect refuses another one): WAL of two
// clusters must never mix.
func (s *site) learnIdentity(ctx context.Context, r *repo.Repository) error {
	s.a.alerts.Clear(s.name, AlertConfiguration, "repository")
	backups, err := backup.Backups(ctx, r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repoIdentity = repoIdentity{}
	if nb, ok := service.Newest(backups); ok {
		s.repoIdentity = repoIdentity{systemID: nb.Info.SystemIdentifier, major: pg.Major(nb.Info.ServerVersion)}
	}
	return nil
}

// onStreamStatus mirrors the streamer's position into state and metrics.
func (s *site) onStreamStatus(stt stream.Status) {
	m := s.a.metrics
	m.streamerConnected.WithLabelValues(s.name).Set(boolGauge(stt.Connected))
	if stt.Connected {
		m.walLag.WithLabelValues(s.name).Set(float64(stt.LagBytes()))
	}
	s.mu.Lock()
	st := s.st.Streamer
	flipped := false
	if st != nil {
		flipped = st.Connected != stt.Connected
		st.Connected, st.Node = stt.Connected, stt.Node
		if stt.Connected {
			st.Timeline = stt.Timeline
			st.Received, st.Flushed, st.ServerEnd = stt.Received.String(), stt.Flushed.String(), stt.ServerEnd.String()
			st.LagBytes = stt.LagBytes()
			lag := st.LagBytes
			s.st.WAL.LagBytes = &lag
			if !stt.LastFlush.IsZero() {
				t := stt.LastFlush.UTC()
				st.LastFlush = &t
			}
		}
	}
	if stt.Connected {
		s.slotReady = true
	}
	if !stt.LastFlush.IsZero() && stt.LastFlush.After(s.lastArchived) {
		s.lastArchived = stt.LastFlush
		t := stt.LastFlush.UTC()
		s.st.WAL.LastArchived = &t
		m.walLastArchived.WithLabelValues(s.name).Set(unix(stt.LastFlush))
	}
	s.mu.Unlock()
	if stt.Connected && flipped {
		s.a.alerts.ClearSources(s.name, func(_, src string) bool { return src == "streamer" })
	}
	if flipped {
		s.a.changed()
	}
}

// noteServer records what a connection learned about the server.
func (s *site) noteServer(n node, version string, major int, sys pglogrepl.IdentifySystemResult) {
	now := s.a.clock.Now().UTC()
	s.mu.Lock()
	s.st.Server = &ServerState{Node: n.name, Version: version, SystemIdentifier: sys.SystemID, Seen: now}
	s.mu.Unlock()
}

// maintenance reports whether the maintenance-mode file exists, and
// mirrors it into state and metrics.
func (s *site) maintenance() bool {
	_, err := os.Stat(s.config().MaintenanceModeFile)
	on := err == nil
	s.a.metrics.maintenance.WithLabelValues(s.name).Set(boolGauge(on))
	s.mu.Lock()
	changed := s.st.Maintenance != on
	s.st.Maintenance = on
	s.mu.Unlock()
	if changed {
		if on {
			s.log.Warn("maintenance mode: no new backup, prune or drill starts until the file is removed", "file", s.config().MaintenanceModeFile)
		} else {
			s.log.Info("maintenance mode ended")
		}
		s.a.changed()
	}
	return on
}

// statsLoop refreshes the repository figures every stats_interval and
// when asked; in archive mode it also asks PostgreSQL how far its WAL is.
func (s *site) statsLoop(ctx context.Context) {
	t := time.NewTicker(s.a.config().StatsInterval.D)
	defer t.Stop()
	for {
		s.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.refreshNow:
		}
	}
}

// askRefresh makes the stats loop refresh soon.
func (s *site) askRefresh() {
	select {
	case s.refreshNow <- struct{}{}:
	default:
	}
}

func (s *site) refresh(ctx context.Context) {
	cfg := s.config()
	s.maintenance()
	var sum *service.Summary
	err := s.withReader(ctx, func(r *repo.Repository) error {
		var err error
		sum, err = service.Summarize(ctx, r, true)
		return err
	})
	if ctx.Err() != nil {
		return
	}
	now := s.a.clock.Now().UTC()
	if err != nil {
		s.log.Warn("cannot read the repository", "err", err)
		s.update(func(st *SiteState) {
			if st.RepoStats == nil {
				st.RepoStats = &RepoState{}
			}
			st.RepoStats.Error, st.RepoStats.Updated = err.Error(), now
		})
		return
	}
	s.applySummary(sum, now)
	if cfg.IsActive() && cfg.Mode == "archive" {
		s.probe(ctx, sum)
	}
}

// applySummary puts a repository summary into state and metrics.
func (s *site) applySummary(sum *service.Summary, now time.Time) {
	m := s.a.metrics
	m.backups.WithLabelValues(s.name).Set(float64(len(sum.Backups)))
	if sum.Last != nil {
		s.setLastBackupMetrics(sum.Last)
	}
	if sum.Stats != nil {
		m.repoStored.WithLabelValues(s.name).Set(float64(sum.Stats.StoredBytes))
	}
	if w := sum.PITR; w != nil {
		m.pitrWindow.WithLabelValues(s.name).Set(w.Seconds)
		m.pitrEarliest.WithLabelValues(s.name).Set(unix(w.Earliest))
		m.pitrLatest.WithLabelValues(s.name).Set(unix(w.Latest))
	}
	s.mu.Lock()
	s.summaryKnown = true
	s.st.Backup.Count = len(sum.Backups)
	// The base backup schedule goes on from the newest backup the server
	// made: synthetic ones (their own job) do not put it off.
	s.st.Backup.Last = sum.LastReal
	s.st.PITR = sum.PITR
	rs := &RepoState{Updated: now, WALFiles: sum.WALFiles}
	if sum.Stats != nil {
		rs.StoredBytes, rs.Snapshots = sum.Stats.StoredBytes, sum.Stats.Snapshots
	}
	s.st.RepoStats = rs
	if sum.LastArchived.After(s.lastArchived) {
		s.lastArchived = sum.LastArchived
		t := sum.LastArchived.UTC()
		s.st.WAL.LastArchived = &t
		m.walLastArchived.WithLabelValues(s.name).Set(unix(sum.LastArchived))
	}
	s.repoIdentity = repoIdentity{} // an empty repository takes any cluster
	if len(sum.Backups) > 0 {
		nb, _ := service.Newest(sum.Backups)
		s.repoIdentity = repoIdentity{systemID: nb.Info.SystemIdentifier, major: pg.Major(nb.Info.ServerVersion)}
	}
	s.mu.Unlock()
	s.a.changed()
}

func (s *site) setLastBackupMetrics(b *service.BackupInfo) {
	m := s.a.metrics
	m.lastBackupTime.WithLabelValues(s.name).Set(unix(b.End))
	m.lastBackupDuration.WithLabelValues(s.name).Set(b.Seconds)
	m.backupBytes.WithLabelValues(s.name).Set(float64(b.Bytes))
	m.backupStoredBytes.WithLabelValues(s.name).Set(float64(b.StoredBytes))
}

// probe asks PostgreSQL (archive mode) how far its WAL is, for the lag.
func (s *site) probe(ctx context.Context, sum *service.Summary) {
	conn, _, err := s.connectAny(ctx, purposeProbe)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("cannot reach PostgreSQL", "err", err)
		}
		return
	}
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	conn.Close(context.WithoutCancel(ctx))
	if err != nil || sum.ArchivedEnd == 0 {
		return
	}
	lag := int64(0)
	if sys.XLogPos > sum.ArchivedEnd {
		lag = int64(sys.XLogPos - sum.ArchivedEnd)
	}
	s.a.metrics.walLag.WithLabelValues(s.name).Set(float64(lag))
	s.update(func(st *SiteState) { st.WAL.LagBytes = &lag })
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// backoff doubles d within [lo, hi].
func backoff(d, lo, hi time.Duration) time.Duration {
	if d < lo {
		return lo
	}
	return min(2*d, hi)
}

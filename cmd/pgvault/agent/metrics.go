package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the agent's Prometheus metrics, in a registry of its own
// (no global registry: two agents in one process, as in tests, do not
// share). Every pgvault_* metric but pgvault_agent_info carries a site
// label; docs/reference/config.md lists them.
type Metrics struct {
	Registry *prometheus.Registry

	lastBackupTime     *prometheus.GaugeVec
	lastBackupDuration *prometheus.GaugeVec
	backupBytes        *prometheus.GaugeVec
	backupStoredBytes  *prometheus.GaugeVec
	backups            *prometheus.GaugeVec
	backupRunning      *prometheus.GaugeVec
	backupFailures     *prometheus.CounterVec
	walLag             *prometheus.GaugeVec
	walLastArchived    *prometheus.GaugeVec
	streamerConnected  *prometheus.GaugeVec
	streamerRestarts   *prometheus.CounterVec
	uploadErrors       *prometheus.CounterVec
	uploadRetries      *prometheus.CounterVec
	repoStored         *prometheus.GaugeVec
	pitrWindow         *prometheus.GaugeVec
	pitrEarliest       *prometheus.GaugeVec
	pitrLatest         *prometheus.GaugeVec
	pruneLast          *prometheus.GaugeVec
	pruneFreed         *prometheus.CounterVec
	walCheckLast       *prometheus.GaugeVec
	walMissing         *prometheus.GaugeVec
	drillSuccess       *prometheus.GaugeVec
	drillLast          *prometheus.GaugeVec
	drillDuration      *prometheus.GaugeVec
	syntheticLast      *prometheus.GaugeVec
	syntheticDuration  *prometheus.GaugeVec
	syntheticFailures  *prometheus.CounterVec
	maintenance        *prometheus.GaugeVec
	alert              *prometheus.GaugeVec
	vecs               []interface{ DeletePartialMatch(prometheus.Labels) int }
}

// NewMetrics creates the metrics in a new registry, with Go runtime and
// process metrics.
func NewMetrics(version string) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{Registry: reg}
	site := []string{"site"}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, append(site, labels...))
		reg.MustRegister(v)
		m.vecs = append(m.vecs, v)
		return v
	}
	counter := func(name, help string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, site)
		reg.MustRegister(v)
		m.vecs = append(m.vecs, v)
		return v
	}
	m.lastBackupTime = gauge("pgvault_last_backup_timestamp_seconds", "End time (Unix seconds) of the newest base backup in the repository.")
	m.lastBackupDuration = gauge("pgvault_last_backup_duration_seconds", "How long the newest base backup took.")
	m.backupBytes = gauge("pgvault_backup_bytes", "Size of the newest base backup: the bytes PostgreSQL sent.")
	m.backupStoredBytes = gauge("pgvault_backup_stored_bytes", "Bytes the newest base backup added to the repository after deduplication and compression.")
	m.backups = gauge("pgvault_backups", "Number of base backups in the repository.")
	m.backupRunning = gauge("pgvault_backup_running", "1 while the agent takes a base backup of the site.")
	m.backupFailures = counter("pgvault_backup_failures_total", "Base backups the agent started that failed.")
	m.walLag = gauge("pgvault_wal_lag_bytes", "WAL the server has written that is not yet stored in the repository.")
	m.walLastArchived = gauge("pgvault_wal_last_archived_timestamp_seconds", "When WAL was last stored in the repository (Unix seconds).")
	m.streamerConnected = gauge("pgvault_streamer_connected", "1 while the WAL streamer is connected to PostgreSQL (stream mode).")
	m.streamerRestarts = counter("pgvault_streamer_restarts_total", "Times the agent restarted the WAL streamer after it failed.")
	m.uploadErrors = counter("pgvault_upload_errors_total", "Uploads to the repository storage that failed after every retry.")
	m.uploadRetries = counter("pgvault_upload_retries_total", "Failed upload attempts that were retried.")
	m.repoStored = gauge("pgvault_repo_stored_bytes", "Bytes stored in the repository (every pack).")
	m.pitrWindow = gauge("pgvault_pitr_window_seconds", "Length of the point-in-time recovery window: latest minus earliest restorable time.")
	m.pitrEarliest = gauge("pgvault_pitr_earliest_timestamp_seconds", "Earliest restorable time: the end of the oldest restorable backup.")
	m.pitrLatest = gauge("pgvault_pitr_latest_timestamp_seconds", "Latest restorable time: when the newest WAL of an unbroken run was stored.")
	m.pruneLast = gauge("pgvault_prune_last_timestamp_seconds", "When retention last ran to completion.")
	m.pruneFreed = counter("pgvault_prune_freed_bytes_total", "Bytes prune freed in the repository.")
	m.walCheckLast = gauge("pgvault_wal_check_last_timestamp_seconds", "When the WAL gap check last ran to completion.")
	m.walMissing = gauge("pgvault_wal_missing_segments", "WAL segments the last gap check found missing.")
	m.drillSuccess = gauge("pgvault_drill_success", "1 if the last recovery drill (verify --boot) succeeded, 0 if it failed.")
	m.drillLast = gauge("pgvault_drill_last_timestamp_seconds", "When the last recovery drill ended.")
	m.drillDuration = gauge("pgvault_drill_duration_seconds", "How long the last recovery drill took.")
	m.syntheticLast = gauge("pgvault_synthetic_backup_last_timestamp_seconds", "When the last synthetic backup (rolled forward from the stored WAL) was stored.")
	m.syntheticDuration = gauge("pgvault_synthetic_backup_duration_seconds", "How long the last synthetic backup took.")
	m.syntheticFailures = counter("pgvault_synthetic_backup_failures_total", "Synthetic backups that failed.")
	m.maintenance = gauge("pgvault_maintenance_mode", "1 while the site's maintenance-mode file exists (no new backup, prune or drill starts).")
	m.alert = gauge("pgvault_alert", "1 while the alert is active (its alert file exists).", "alert")

	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pgvault_agent_info", Help: "The agent's version (value 1)."}, []string{"version"})
	info.WithLabelValues(version).Set(1)
	reg.MustRegister(info,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// DeleteSite drops every series of a site that is no longer configured.
func (m *Metrics) DeleteSite(site string) {
	for _, v := range m.vecs {
		v.DeletePartialMatch(prometheus.Labels{"site": site})
	}
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// SetAlert mirrors an alert's state.
func (m *Metrics) SetAlert(site, name string, active bool) {
	m.alert.WithLabelValues(site, name).Set(boolGauge(active))
}

// initSite creates the series every site has from the start, so that
// dashboards see zeros instead of gaps.
func (m *Metrics) initSite(site string) {
	m.uploadErrors.WithLabelValues(site)
	m.uploadRetries.WithLabelValues(site)
	m.backupFailures.WithLabelValues(site)
	m.streamerRestarts.WithLabelValues(site)
	m.pruneFreed.WithLabelValues(site)
	m.backupRunning.WithLabelValues(site).Set(0)
	for _, name := range AlertNames {
		m.alert.WithLabelValues(site, name)
	}
}

package agent

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
	dto "github.com/prometheus/client_model/go"

	"github.com/pgvault/pgvault/internal/redact"
	"github.com/pgvault/pgvault/internal/statsd"
)

// pushTimeout bounds one push to the Pushgateway, and the dial of statsd.
const pushTimeout = 10 * time.Second

// exporter sends the agent's metrics (the pgvault_* series of /metrics)
// to statsd and to a Pushgateway every stats_interval. It reads the
// configuration at every round, so a reload takes effect at the next one.
// One goroutine (runExporters) owns it.
type exporter struct {
	log      *slog.Logger
	metrics  *Metrics
	host     string
	statsdAt string // the statsd settings the client was made for
	statsd   *statsd.Client
	counters map[string]float64 // last value sent of each counter series
	failing  map[string]string  // output -> the error last logged
}

// runExporters exports every stats_interval until ctx ends, then once
// more (the values the sites had when they stopped).
func (a *Agent) runExporters(ctx context.Context) {
	e := &exporter{log: a.log, metrics: a.metrics, host: a.host, counters: map[string]float64{}, failing: map[string]string{}}
	defer e.close()
	for {
		t := time.NewTimer(a.config().StatsInterval.D)
		select {
		case <-t.C:
			e.export(ctx, a.config())
		case <-ctx.Done():
			t.Stop()
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), pushTimeout)
			e.export(final, a.config())
			cancel()
			return
		}
	}
}

func (e *exporter) export(ctx context.Context, cfg *Config) {
	if cfg.Statsd == nil && cfg.Pushgateway == nil {
		e.close()
		return
	}
	fams, err := e.metrics.Registry.Gather()
	if err != nil {
		e.log.Error("cannot gather the metrics to export", "err", err)
		return
	}
	fams = slices.DeleteFunc(fams, func(mf *dto.MetricFamily) bool { return !strings.HasPrefix(mf.GetName(), "pgvault_") })
	e.sendStatsd(ctx, cfg.Statsd, fams)
	e.push(ctx, cfg.Pushgateway, fams)
}

// report logs an output's failure once, and when it ends.
func (e *exporter) report(output, target string, err error) {
	if err == nil {
		if e.failing[output] != "" {
			e.log.Info(output+" works again", "target", target)
			delete(e.failing, output)
		}
		return
	}
	msg := redact.Text(err.Error())
	if e.failing[output] != msg {
		e.log.Warn("cannot send metrics to "+output+"; retrying every stats_interval", "target", target, "err", msg)
		e.failing[output] = msg
	}
}

func (e *exporter) close() {
	if e.statsd != nil {
		e.statsd.Close()
		e.statsd, e.statsdAt = nil, ""
	}
}

// statsdName is a series' statsd name: pgvault.<rest of the name>, and
// counters without _total (statsd counters are increments, not totals).
func statsdName(mf *dto.MetricFamily) string {
	n := "pgvault." + strings.TrimPrefix(mf.GetName(), "pgvault_")
	if mf.GetType() == dto.MetricType_COUNTER {
		n = strings.TrimSuffix(n, "_total")
	}
	return n
}

// sendStatsd sends gauges as gauges and counters as the increase since
// the previous round.
func (e *exporter) sendStatsd(ctx context.Context, cfg *Statsd, fams []*dto.MetricFamily) {
	if cfg == nil {
		e.close()
		return
	}
	tags := make([]statsd.Tag, 0, len(cfg.Tags))
	for _, k := range slices.Sorted(maps.Keys(cfg.Tags)) {
		tags = append(tags, statsd.Tag{Key: k, Value: cfg.Tags[k]})
	}
	at := fmt.Sprintf("%s %s %v", cfg.Addr(), cfg.Format, tags)
	if e.statsd == nil || e.statsdAt != at {
		e.close()
		dctx, cancel := context.WithTimeout(ctx, pushTimeout)
		c, err := statsd.Dial(dctx, cfg.Addr(), statsd.Format(cfg.Format), tags)
		cancel()
		if err != nil {
			e.report("statsd", cfg.Addr(), err)
			return
		}
		e.statsd, e.statsdAt = c, at
	}
	for _, mf := range fams {
		name := statsdName(mf)
		for _, m := range mf.GetMetric() {
			var mt []statsd.Tag
			var key strings.Builder
			key.WriteString(mf.GetName())
			// site first, then the other labels (alert) in name order.
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "site" {
					mt = append([]statsd.Tag{{Key: "site", Value: lp.GetValue()}}, mt...)
				} else {
					mt = append(mt, statsd.Tag{Key: lp.GetName(), Value: lp.GetValue()})
				}
				key.WriteString("\xff" + lp.GetName() + "=" + lp.GetValue())
			}
			switch mf.GetType() {
			case dto.MetricType_GAUGE:
				e.statsd.Gauge(name, m.GetGauge().GetValue(), mt...)
			case dto.MetricType_COUNTER:
				v := m.GetCounter().GetValue()
				d := v - e.counters[key.String()]
				if d < 0 { // the series was deleted and made again
					d = v
				}
				e.counters[key.String()] = v
				e.statsd.Count(name, d, mt...)
			}
		}
	}
	e.report("statsd", cfg.Addr(), e.statsd.Flush())
}

// push replaces the agent's group on the Pushgateway (job="pgvault",
// instance=<host>, and the configured tags) with the current series.
func (e *exporter) push(ctx context.Context, cfg *Pushgateway, fams []*dto.MetricFamily) {
	if cfg == nil {
		return
	}
	p := push.New(cfg.Endpoint, "pgvault").
		Gatherer(prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return fams, nil })).
		Grouping("instance", e.host)
	for _, k := range slices.Sorted(maps.Keys(cfg.Tags)) {
		p = p.Grouping(k, cfg.Tags[k])
	}
	ctx, cancel := context.WithTimeout(ctx, pushTimeout)
	defer cancel()
	e.report("the Pushgateway", redact.URL(cfg.Endpoint), p.PushContext(ctx))
}

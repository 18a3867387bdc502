package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

// The monitoring documents shipped in docs/monitoring must only name
// metrics this agent exports: a renamed metric would otherwise leave a
// dashboard panel empty and an alert silent, with nothing failing.
// (integration/monitoring_test.go evaluates the rules on a real agent.)
const (
	dashboardFile = "../../../docs/monitoring/grafana-dashboard.json"
	rulesFile     = "../../../docs/monitoring/alerts.yml"
)

// prometheusOwn are series Prometheus adds to every scrape target.
var prometheusOwn = []string{"up"}

// exportedMetricNames builds the registry NewMetrics builds, gives every
// metric of it a series (a vector without one is not gathered) and
// returns the names it gathers.
func exportedMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	m := NewMetrics("test")
	m.initSite("s")
	for _, v := range m.vecs {
		// A vector with more labels than site (pgvault_alert) refuses
		// one value; initSite has given those their series.
		switch v := v.(type) {
		case *prometheus.GaugeVec:
			v.GetMetricWithLabelValues("s")
		case *prometheus.CounterVec:
			v.GetMetricWithLabelValues("s")
		default:
			t.Fatalf("metric vector %T: teach exportedMetricNames its type", v)
		}
	}
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	pgvault := 0
	for _, f := range families {
		names[f.GetName()] = true
		if strings.HasPrefix(f.GetName(), "pgvault_") {
			pgvault++
		}
	}
	if want := len(m.vecs) + 1; pgvault != want { // + pgvault_agent_info
		t.Fatalf("gathered %d pgvault_* metrics, the registry has %d: a vector got no series", pgvault, want)
	}
	for _, n := range prometheusOwn {
		names[n] = true
	}
	return names
}

// promqlWords are PromQL keywords and modifiers that look like names.
var promqlWords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true,
	// Aggregations: "sum by (site) (x)" puts no parenthesis after the name.
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true,
}

// labelListWords are followed by a parenthesised list of label names.
var labelListWords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// metricNames returns the metric names a PromQL expression selects: the
// identifiers outside label matchers, ranges and strings that are not
// functions, keywords or label lists. Grafana's $variables are skipped.
// It is a lexer, not a parser: promtool checks the syntax.
func metricNames(expr string) ([]string, error) {
	var names []string
	isStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isPart := func(c byte) bool { return isStart(c) || c >= '0' && c <= '9' }
	// skipString returns the index just past the string literal at i.
	skipString := func(i int) (int, error) {
		q := expr[i]
		for j := i + 1; j < len(expr); j++ {
			switch {
			case expr[j] == '\\' && q != '`':
				j++ // an escaped character
			case expr[j] == q:
				return j + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated string in %q", expr)
	}
	// skipTo returns the index just past the closer matching the opener
	// at i, stepping over strings.
	skipTo := func(i int, open, closer byte) (int, error) {
		depth := 0
		for i < len(expr) {
			switch c := expr[i]; c {
			case '"', '\'', '`':
				j, err := skipString(i)
				if err != nil {
					return 0, err
				}
				i = j
				continue
			case open:
				depth++
			case closer:
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
			i++
		}
		return 0, fmt.Errorf("no %q closes %q in %q", closer, open, expr)
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '{':
			j, err := skipTo(i, '{', '}')
			if err != nil {
				return nil, err
			}
			i = j
		case c == '[':
			j, err := skipTo(i, '[', ']')
			if err != nil {
				return nil, err
			}
			i = j
		case c == '"' || c == '\'' || c == '`':
			j, err := skipString(i)
			if err != nil {
				return nil, err
			}
			i = j
		case c == '$': // Grafana variable: $name or ${name}
			i++
			if i < len(expr) && expr[i] == '{' {
				j, err := skipTo(i, '{', '}')
				if err != nil {
					return nil, err
				}
				i = j
			}
			for i < len(expr) && isPart(expr[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.': // a number or a duration
			for i < len(expr) && (isPart(expr[i]) || expr[i] == '.') {
				i++
			}
		case isStart(c):
			j := i
			for j < len(expr) && isPart(expr[j]) {
				j++
			}
			word := expr[i:j]
			k := j
			for k < len(expr) && expr[k] == ' ' {
				k++
			}
			paren := k < len(expr) && expr[k] == '('
			switch {
			case labelListWords[word] && paren:
				end, err := skipTo(k, '(', ')')
				if err != nil {
					return nil, err
				}
				j = end
			case paren || promqlWords[strings.ToLower(word)]:
				// a function or aggregation, or a keyword
			default:
				names = append(names, word)
			}
			i = j
		default:
			i++
		}
	}
	return names, nil
}

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`pgvault_backups`, []string{"pgvault_backups"}},
		{`time() - pgvault_last_backup_timestamp_seconds{site=~"$site"} > 36 * 3600`, []string{"pgvault_last_backup_timestamp_seconds"}},
		{`increase(pgvault_upload_errors_total{site=~"$site"}[$__rate_interval]) > 0`, []string{"pgvault_upload_errors_total"}},
		{`sum by (site) (pgvault_alert{alert!~"wal_gap|drill_failed"}) or on(site) group_left(alert) up == 0`, []string{"pgvault_alert", "up"}},
		{`sum(rate(a_total[5m] offset 1h)) without (instance) / ignoring(x) b unless c`, []string{"a_total", "b", "c"}},
		{`pgvault_wal_lag_bytes > 64 * 1024 * 1e3 and bool pgvault_x`, []string{"pgvault_wal_lag_bytes", "pgvault_x"}},
		{`x{a="}\"{"} * ${var} + $var`, []string{"x"}},
	} {
		got, err := metricNames(tc.expr)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.expr, got, tc.want)
		}
	}
	for _, bad := range []string{`x{a="b"`, `sum by (site x`, `x{a="b}`} {
		if _, err := metricNames(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// checkNames fails the test for every name in expr the agent does not
// export.
func checkNames(t *testing.T, where, expr string, exported map[string]bool) {
	t.Helper()
	names, err := metricNames(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	if len(names) == 0 {
		t.Errorf("%s: %q selects no metric", where, expr)
	}
	for _, n := range names {
		if !exported[n] {
			t.Errorf("%s: %q uses %s, which the agent does not export (metrics.go)", where, expr, n)
		}
	}
}

// grafanaPanel is the part of a Grafana panel this test reads.
type grafanaPanel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Repeat     string         `json:"repeat"`
	Datasource map[string]any `json:"datasource"`
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource map[string]any `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // of a collapsed row
}

func TestMonitoringDashboardUsesAgentMetrics(t *testing.T) {
	exported := exportedMetricNames(t)
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID           string         `json:"uid"`
		Title         string         `json:"title"`
		SchemaVersion int            `json:"schemaVersion"`
		Panels        []grafanaPanel `json:"panels"`
		Templating    struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Query      any    `json:"query"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.UID == "" || dash.Title == "" || dash.SchemaVersion < 36 {
		t.Errorf("uid %q, title %q, schemaVersion %d: Grafana 10+ imports schemaVersion 36 and later", dash.UID, dash.Title, dash.SchemaVersion)
	}

	vars := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
		switch v.Name {
		case "datasource":
			if v.Type != "datasource" || v.Query != "prometheus" {
				t.Errorf("variable datasource: type %q query %v, want a Prometheus data source variable", v.Type, v.Query)
			}
		case "site":
			m := regexp.MustCompile(`^label_values\((\w+), *site\)$`).FindStringSubmatch(v.Definition)
			if m == nil {
				t.Errorf("variable site: definition %q, want label_values(METRIC, site)", v.Definition)
				break
			}
			checkNames(t, "variable site", m[1], exported)
		}
	}
	if !vars["datasource"] || !vars["site"] {
		t.Fatalf("variables %v: want datasource and site", vars)
	}

	var panels []grafanaPanel
	for _, p := range dash.Panels {
		panels = append(panels, p)
		panels = append(panels, p.Panels...)
	}
	ids := map[int]string{}
	exprs := 0
	used := map[string]bool{}
	for _, p := range panels {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if other, dup := ids[p.ID]; dup {
			t.Errorf("%s: id already used by %q", where, other)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			if p.Repeat != "" && !vars[p.Repeat] {
				t.Errorf("%s repeats over unknown variable %q", where, p.Repeat)
			}
			continue
		}
		if p.Datasource["uid"] != "${datasource}" {
			t.Errorf("%s: datasource %v, want uid ${datasource}", where, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s has no query", where)
		}
		for _, q := range p.Targets {
			exprs++
			where := fmt.Sprintf("%s query %s", where, q.RefID)
			if q.Datasource["uid"] != "${datasource}" {
				t.Errorf("%s: datasource %v, want uid ${datasource}", where, q.Datasource)
			}
			checkNames(t, where, q.Expr, exported)
			// Per site: every selector follows the site variable.
			if strings.Count(q.Expr, "pgvault_") != strings.Count(q.Expr, `{site=~"$site"}`) {
				t.Errorf("%s: %q: every pgvault_* selector needs {site=~\"$site\"}", where, q.Expr)
			}
			names, _ := metricNames(q.Expr)
			for _, n := range names {
				used[n] = true
			}
		}
	}
	t.Logf("%d panels, %d queries, %d metrics", len(panels), exprs, len(used))
	// What issue 21 asks the dashboard to show.
	for _, want := range []string{
		"pgvault_last_backup_timestamp_seconds", "pgvault_backups", "pgvault_wal_lag_bytes",
		"pgvault_wal_last_archived_timestamp_seconds", "pgvault_streamer_connected", "pgvault_pitr_window_seconds",
		"pgvault_upload_errors_total", "pgvault_upload_retries_total", "pgvault_drill_success",
		"pgvault_drill_last_timestamp_seconds", "pgvault_synthetic_backup_last_timestamp_seconds",
		"pgvault_prune_freed_bytes_total", "pgvault_alert",
	} {
		if !used[want] {
			t.Errorf("no panel shows %s", want)
		}
	}
}

// alertRules is the part of a Prometheus rule file this test reads.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func TestMonitoringRulesUseAgentMetrics(t *testing.T) {
	exported := exportedMetricNames(t)
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules alertRules
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	// alert="x" and alert!~"x|y" name the agent's alerts.
	alertLabel := regexp.MustCompile(`\balert\s*(?:=|!=|=~|!~)\s*"([^"]*)"`)
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			where := "rule " + r.Alert
			if r.Alert == "" {
				t.Errorf("group %s: a rule without alert: %q", g.Name, r.Expr)
				continue
			}
			checkNames(t, where, r.Expr, exported)
			if r.For == "" {
				t.Errorf("%s has no for:", where)
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
				t.Errorf("%s: severity %q, want critical, warning or info", where, s)
			}
			names, _ := metricNames(r.Expr)
			naming := "{{ $labels.site }}"
			if slices.Equal(names, []string{"up"}) {
				naming = "{{ $labels.instance }}" // up has no site
			}
			for _, a := range []string{"summary", "description"} {
				if !strings.Contains(r.Annotations[a], naming) {
					t.Errorf("%s: the %s does not name %s: %q", where, a, naming, r.Annotations[a])
				}
			}
			if !strings.Contains(r.Annotations["description"], "`pgvault ") {
				t.Errorf("%s: the description names no pgvault command to run: %q", where, r.Annotations["description"])
			}
			for _, m := range alertLabel.FindAllStringSubmatch(r.Expr, -1) {
				for _, name := range strings.Split(m[1], "|") {
					if !slices.Contains(AlertNames, name) {
						t.Errorf("%s: %q names alert %q, which the agent does not raise (alerts.go)", where, r.Expr, name)
					}
				}
			}
		}
	}
	if n == 0 {
		t.Fatalf("%s holds no rule", rulesFile)
	}
}

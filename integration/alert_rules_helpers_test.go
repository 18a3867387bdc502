package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pgvault/pgvault/integration/promtool"
)

// Helpers of the monitoring tests (alert_rules_test.go): the dashboard's
// queries, scrapes of a real agent, and promtool rule-test documents built
// from them.

type dashboardQuery struct {
	name  string // dashboard_panel_<id>_<refId>
	panel string // its title
	expr  string
}

// dashboardQueries reads the dashboard's queries, with site for $site.
func dashboardQueries(t *testing.T, site string) []dashboardQuery {
	t.Helper()
	data, err := os.ReadFile(monitoringDashboard)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			ID      int    `json:"id"`
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", monitoringDashboard, err)
	}
	// What Grafana puts in place of its variables.
	vars := strings.NewReplacer(`$site`, site, `$__rate_interval`, `5m`, `$__range`, `1d`, `$__interval`, `1m`)
	var qs []dashboardQuery
	for _, p := range dash.Panels {
		for _, q := range p.Targets {
			qs = append(qs, dashboardQuery{name: fmt.Sprintf("dashboard_panel_%d_%s", p.ID, q.RefID), panel: p.Title, expr: vars.Replace(q.Expr)})
		}
	}
	if len(qs) == 0 {
		t.Fatalf("%s has no query", monitoringDashboard)
	}
	return qs
}

// scrape is one scrape of the agent, as Prometheus would record it.
type scrape struct {
	at      time.Time
	up      bool              // the scrape succeeded
	samples map[string]string // series (name{labels}) -> value, pgvault_* only
}

// scrapeAgent reads /metrics at addr. An agent that does not answer is a
// failed scrape (up 0), not an error: that is what Prometheus records.
func scrapeAgent(t *testing.T, addr string) scrape {
	t.Helper()
	s := scrape{at: time.Now(), samples: map[string]string{}}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Logf("scrape of %s failed (up 0): %v", addr, err)
		return s
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape of %s: %s", addr, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "pgvault_") {
			continue // comments, and the Go and process collectors
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("scrape of %s: line %q", addr, line)
		}
		s.samples[line[:i]] = line[i+1:]
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scrape of %s: %v", addr, err)
	}
	s.up = true
	return s
}

// waitScrape scrapes the running agent a at addr until cond holds on the
// samples.
func waitScrape(t *testing.T, a *agentProc, addr, what string, timeout time.Duration, cond func(map[string]string) bool) scrape {
	t.Helper()
	var sc scrape
	waitFor(t, timeout, what, func() (bool, error) {
		a.exited(what)
		sc = scrapeAgent(t, addr)
		return sc.up && cond(sc.samples), fmt.Errorf("/metrics: %v", sc.samples)
	})
	return sc
}

// segment is a scrape held for a number of samples.
type segment struct {
	s       scrape
	samples int
}

// inputSeries turns scrapes into promtool input_series: each series with
// the target labels Prometheus adds (job, instance), each scrape's value
// held for its segment's samples, "_" (no sample) where a scrape lacks
// the series, and up from whether each scrape succeeded. Test time 0 is
// the real time base: timestamps (*_timestamp_seconds) are shifted by it,
// so time() - timestamp in the test is the age the real scrape showed,
// growing as the test's clock advances over values held constant.
func inputSeries(t *testing.T, job, instance string, base time.Time, segs []segment) []map[string]string {
	t.Helper()
	target := fmt.Sprintf("job=%q,instance=%q", job, instance)
	keys := map[string]bool{}
	for _, sg := range segs {
		for k := range sg.s.samples {
			keys[k] = true
		}
	}
	var out []map[string]string
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		name, labels, _ := strings.Cut(strings.TrimSuffix(k, "}"), "{")
		series := name + "{" + target + "}"
		if labels != "" {
			series = name + "{" + labels + "," + target + "}"
		}
		var values []string
		for _, sg := range segs {
			v, ok := sg.s.samples[k]
			if !ok {
				values = append(values, fmt.Sprintf("_x%d", sg.samples))
				continue
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				t.Fatalf("series %s: value %q", k, v)
			}
			if strings.HasSuffix(name, "_timestamp_seconds") {
				f -= float64(base.UnixNano()) / 1e9
			}
			values = append(values, held(strconv.FormatFloat(f, 'f', -1, 64), sg.samples))
		}
		out = append(out, map[string]string{"series": series, "values": strings.Join(values, " ")})
	}
	var up []string
	for _, sg := range segs {
		up = append(up, held(map[bool]string{true: "1", false: "0"}[sg.s.up], sg.samples))
	}
	return append(out, map[string]string{"series": "up{" + target + "}", "values": strings.Join(up, " ")})
}

// held is promtool's notation for v repeated n times ("axn" is n+1 values).
func held(v string, n int) string {
	if n == 1 {
		return v
	}
	return fmt.Sprintf("%sx%d", v, n-1)
}

// monitoringRule is what the test reads of a rule in alerts.yml.
type monitoringRule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func readMonitoringRules(t *testing.T, path string) ([]monitoringRule, []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Rules []monitoringRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var rules []monitoringRule
	for _, g := range doc.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s: no rules", path)
	}
	return rules, data
}

// labelRef is the only template form the annotations use, so that the
// test can render them as Prometheus does.
var labelRef = regexp.MustCompile(`\{\{ *\$labels\.(\w+) *\}\}`)

func renderAnnotation(t *testing.T, rule, text string, labels map[string]string) string {
	t.Helper()
	out := labelRef.ReplaceAllStringFunc(text, func(m string) string {
		name := labelRef.FindStringSubmatch(m)[1]
		v, ok := labels[name]
		if !ok {
			t.Fatalf("rule %s: annotation names $labels.%s, which its alert does not have", rule, name)
		}
		return v
	})
	if strings.Contains(out, "{{") {
		t.Fatalf("rule %s: annotation %q uses a template this test cannot render: keep to {{ $labels.NAME }}", rule, text)
	}
	return out
}

// firing is an alert expected to fire: its name and the labels of the
// series it fires for (besides job and instance, which the test adds,
// and the rule's own labels).
type firing struct {
	alert  string
	labels map[string]string
	bare   bool // labels are all the alert has: no job and instance
}

func siteAlert(alert string) firing {
	return firing{alert: alert, labels: map[string]string{"site": "main"}}
}

// evalCase is a point in a scenario and the alerts firing there: every
// other rule of the file is asserted not to fire.
type evalCase struct {
	at     time.Duration
	firing []firing
}

// scenario is one promtool test: scrapes held over time, one sample per
// step, and evaluations.
type scenario struct {
	name  string
	step  time.Duration
	segs  []segment
	evals []evalCase
}

// promtoolTest writes a `promtool test rules` file for rules and the
// scenarios, which must share their step: it is the file's evaluation
// interval too.
func promtoolTest(t *testing.T, rulesPath string, rules []monitoringRule, instance string, base time.Time, scenarios []scenario) []byte {
	t.Helper()
	const job = "pgvault"
	byName := map[string]monitoringRule{}
	for _, r := range rules {
		byName[r.Alert] = r
	}
	type expAlert struct {
		ExpLabels      map[string]string `yaml:"exp_labels"`
		ExpAnnotations map[string]string `yaml:"exp_annotations"`
	}
	type alertTest struct {
		EvalTime  string     `yaml:"eval_time"`
		Alertname string     `yaml:"alertname"`
		ExpAlerts []expAlert `yaml:"exp_alerts"`
	}
	type test struct {
		Name        string              `yaml:"name"`
		Interval    string              `yaml:"interval"`
		InputSeries []map[string]string `yaml:"input_series"`
		AlertTests  []alertTest         `yaml:"alert_rule_test"`
	}
	doc := struct {
		RuleFiles          []string `yaml:"rule_files"`
		EvaluationInterval string   `yaml:"evaluation_interval"`
		Tests              []test   `yaml:"tests"`
	}{RuleFiles: []string{rulesPath}, EvaluationInterval: scenarios[0].step.String()}
	for _, sc := range scenarios {
		if sc.step != scenarios[0].step {
			t.Fatalf("scenario %s: step %v in a file of step %v", sc.name, sc.step, scenarios[0].step)
		}
		tt := test{Name: sc.name, Interval: sc.step.String(), InputSeries: inputSeries(t, job, instance, base, sc.segs)}
		for _, ev := range sc.evals {
			exp := map[string][]expAlert{}
			for _, f := range ev.firing {
				r, ok := byName[f.alert]
				if !ok {
					t.Fatalf("scenario %s expects %s, which %s does not have", sc.name, f.alert, rulesPath)
				}
				labels := map[string]string{"job": job, "instance": instance}
				if f.bare {
					labels = map[string]string{}
				}
				for k, v := range f.labels {
					labels[k] = v
				}
				for k, v := range r.Labels {
					labels[k] = v
				}
				ann := map[string]string{}
				for k, v := range r.Annotations {
					ann[k] = renderAnnotation(t, r.Alert, v, labels)
				}
				exp[f.alert] = append(exp[f.alert], expAlert{ExpLabels: labels, ExpAnnotations: ann})
			}
			for _, r := range rules {
				tt.AlertTests = append(tt.AlertTests, alertTest{EvalTime: ev.at.String(), Alertname: r.Alert, ExpAlerts: exp[r.Alert]})
			}
		}
		doc.Tests = append(doc.Tests, tt)
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dashboardOnScrape evaluates every query of the Grafana dashboard, with
// $site set to main, on the healthy scrape held for an hour: each must
// return data unless it names a metric the scrape lacks (features this
// test leaves off, such as drills and synthetic backups). Each query
// becomes an alert on absent(query), so promtool says which are empty.
func dashboardOnScrape(t *testing.T, dir, instance string, healthy scrape) {
	t.Helper()
	present := map[string]bool{}
	for k := range healthy.samples {
		name, _, _ := strings.Cut(k, "{")
		present[name] = true
	}
	metric := regexp.MustCompile(`pgvault_\w+`)
	var rules []monitoringRule
	var empty []firing
	var emptyNames []string
	for _, q := range dashboardQueries(t, "main") {
		rules = append(rules, monitoringRule{Alert: q.name, Expr: "absent(" + q.expr + ")"})
		for _, m := range metric.FindAllString(q.expr, -1) {
			if !present[m] {
				// absent() of a regex match has no labels.
				empty = append(empty, firing{alert: q.name, bare: true})
				emptyNames = append(emptyNames, fmt.Sprintf("%q %s", q.panel, m))
				break
			}
		}
	}
	var doc strings.Builder
	doc.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for _, r := range rules {
		fmt.Fprintf(&doc, "      - alert: %s\n        expr: %q\n", r.Alert, r.Expr)
	}
	rulesPath := filepath.Join(dir, "dashboard-rules.yml")
	if err := os.WriteFile(rulesPath, []byte(doc.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	test := promtoolTest(t, rulesPath, rules, instance, healthy.at, []scenario{{
		name:  "dashboard on the healthy agent",
		step:  time.Minute,
		segs:  []segment{{healthy, 60}},
		evals: []evalCase{{at: 30 * time.Minute, firing: empty}},
	}})
	testPath := filepath.Join(dir, "dashboard_test.yml")
	if err := os.WriteFile(testPath, test, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := promtool.Run("test", "rules", testPath); err != nil {
		t.Fatalf("the dashboard's queries on the healthy agent (an alert firing is a query without data): %v", err)
	}
	t.Logf("%d dashboard queries return data on the healthy agent; %d name a metric it does not export yet: %s",
		len(rules)-len(empty), len(empty), strings.Join(emptyNames, ", "))
}

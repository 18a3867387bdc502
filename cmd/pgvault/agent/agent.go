package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/pgvault/pgvault/internal/service"
)

// Options configure Run.
type Options struct {
	// ConfigFile is the YAML configuration; it is read again on Reload.
	ConfigFile string
	// Logger receives the agent's log (nil: discarded).
	Logger *slog.Logger
	// SetLogLevel, if set, is called with the configuration's log_level
	// at start and on every reload.
	SetLogLevel func(level string)
	// Reload delivers reload requests (SIGHUP).
	Reload <-chan os.Signal
	// Executable is the pgvault binary run for recovery drills.
	Executable string
	// StorageHook, if set, changes how every site reaches its storage:
	// the test build's fault injection (cmd/pgvault/faults_test_build.go),
	// so the fault campaigns reach the agent as they reach the CLI.
	StorageHook func(*service.Site)
	// Clock is the time source of schedules and alerts (nil: real time).
	Clock Clock
	// Getenv reads the environment for secrets (nil: os.Getenv).
	Getenv func(string) string
	// Version is reported in the state document and pgvault_agent_info.
	Version string
	// OnListening, if set, is called with the HTTP listener's address.
	OnListening func(addr string)
}

// Agent is a running agent. Run creates it; its methods serve Run's
// goroutines.
type Agent struct {
	opts    Options
	log     *slog.Logger
	clock   Clock
	alerts  *Alerts
	metrics *Metrics
	writer  *stateWriter
	started time.Time
	host    string   // this machine's name, in webhook events and the Pushgateway's instance label
	outputs *outputs // syslog and the webhook

	mu          sync.Mutex
	cfg         *Config
	loaded      time.Time
	reloadError string
	sites       map[string]*site
	http        *httpServer
}

// Run runs the agent until ctx ends (SIGTERM), reloading its
// configuration on every Reload. It returns nil after a clean shutdown,
// once every streamer has stored the WAL it received; an error when the
// configuration cannot be loaded at start or the HTTP listener cannot
// bind. A configuration that fails to reload is logged and recorded in
// the state document, and the agent goes on with the old one.
func Run(ctx context.Context, opts Options) error {
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := Load(opts.ConfigFile, LoadOptions{Getenv: opts.Getenv, Strict: true})
	if err != nil {
		return err
	}
	if opts.SetLogLevel != nil {
		opts.SetLogLevel(cfg.LogLevel)
	}
	// Every logger of the agent goes through the tee, so that syslog can
	// be switched on or moved by a reload.
	tee := newTee(opts.Logger.Handler())
	a := &Agent{opts: opts, log: slog.New(tee), clock: opts.Clock, cfg: cfg, loaded: time.Now().UTC(),
		sites: map[string]*site{}, started: time.Now().UTC()}
	if a.host, err = os.Hostname(); err != nil {
		a.host = "unknown"
	}
	a.outputs = &outputs{tee: tee, log: a.log}
	if err := a.outputs.apply(cfg, true); err != nil {
		return err
	}
	defer a.outputs.close()
	if a.alerts, err = NewAlerts(cfg.AlertDir, a.clock, a.log); err != nil {
		return fmt.Errorf("alert_dir %s: %w", cfg.AlertDir, err)
	}
	a.metrics = NewMetrics(opts.Version)
	a.alerts.OnChange(func(al Alert, active bool) {
		a.metrics.SetAlert(al.Site, al.Name, active)
		a.outputs.notify(alertEvent(al, active, a.host, a.clock.Now()))
		a.changed()
	})
	prev, err := ReadState(cfg.StateFile)
	if err != nil {
		a.log.Warn("ignoring the previous state file", "err", err)
		prev = nil
	}
	if err := a.startHTTP(cfg.HTTP.Listen); err != nil {
		return err
	}
	a.writer = newStateWriter(func() string { return a.config().StateFile }, cfg.StateInterval.D, a.State, a.log)
	writerCtx, stopWriter := context.WithCancel(context.WithoutCancel(ctx))
	writerDone := make(chan struct{})
	go func() { defer close(writerDone); a.writer.run(writerCtx) }()

	// Alerts a previous run left for sites no longer configured are over.
	for _, al := range a.alerts.Active("") {
		if _, ok := cfg.Sites[al.Site]; !ok {
			a.alerts.ClearAll(al.Site, al.Name)
		}
	}
	for _, name := range cfg.SiteNames() {
		var p *SiteState
		if prev != nil {
			p = prev.Sites[name]
		}
		s, err := newSite(a, cfg.Sites[name], p)
		if err != nil {
			a.stopSites()
			stopWriter()
			<-writerDone
			a.stopHTTP()
			return err
		}
		a.mu.Lock()
		a.sites[name] = s
		a.mu.Unlock()
	}
	for _, al := range a.alerts.Active("") {
		a.metrics.SetAlert(al.Site, al.Name, true)
	}
	for _, s := range a.siteList() {
		s.start(ctx)
	}
	exportCtx, stopExport := context.WithCancel(context.WithoutCancel(ctx))
	exportDone := make(chan struct{})
	go func() { defer close(exportDone); a.runExporters(exportCtx) }()
	listening := "off"
	if a.http != nil {
		listening = a.http.Addr()
	}
	a.log.Info("agent started", "sites", len(cfg.Sites), "config", opts.ConfigFile, "http", listening)

	for {
		select {
		case <-ctx.Done():
			a.log.Info("stopping: storing the WAL received so far")
			a.stopSites()
			stopExport() // after the sites: the last export has their final figures
			<-exportDone
			stopWriter()
			<-writerDone
			a.stopHTTP()
			a.log.Info("agent stopped")
			return nil
		case <-opts.Reload:
			a.reload(ctx)
		}
	}
}

func (a *Agent) siteList() []*site {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*site, 0, len(a.sites))
	for _, name := range sortedKeys(a.sites) {
		out = append(out, a.sites[name])
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// stopSites stops every site at once and waits for them.
func (a *Agent) stopSites() {
	var wg sync.WaitGroup
	for _, s := range a.siteList() {
		wg.Add(1)
		go func() { defer wg.Done(); s.stop() }()
	}
	wg.Wait()
}

func (a *Agent) config() *Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// changed asks for a state file write soon.
func (a *Agent) changed() {
	if a.writer != nil {
		a.writer.changed()
	}
}

func (a *Agent) startHTTP(addr string) error {
	if addr == "off" {
		return nil
	}
	srv, err := listen(addr, NewHandler(a.metrics, a.State), a.log)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.http = srv
	a.mu.Unlock()
	if a.opts.OnListening != nil {
		a.opts.OnListening(srv.Addr())
	}
	return nil
}

func (a *Agent) stopHTTP() {
	a.mu.Lock()
	srv := a.http
	a.http = nil
	a.mu.Unlock()
	if srv != nil {
		srv.close()
	}
}

// reload reads the configuration again and applies it: new sites start,
// removed sites stop (their alerts and metrics go), changed sites restart
// the parts the change concerns. A configuration that does not load
// leaves everything as it was.
func (a *Agent) reload(ctx context.Context) {
	a.log.Info("reloading the configuration", "config", a.opts.ConfigFile)
	cfg, err := Load(a.opts.ConfigFile, LoadOptions{Getenv: a.opts.Getenv, Strict: true})
	if err == nil {
		// Check every site before changing anything.
		for _, name := range cfg.SiteNames() {
			if _, err = parseNodes(cfg.Sites[name]); err != nil {
				break
			}
		}
	}
	if err != nil {
		a.log.Error("reload failed; keeping the running configuration", "err", err)
		a.mu.Lock()
		a.reloadError = err.Error()
		a.mu.Unlock()
		a.changed()
		return
	}
	if a.opts.SetLogLevel != nil {
		a.opts.SetLogLevel(cfg.LogLevel)
	}
	a.outputs.apply(cfg, false) // statsd and the Pushgateway follow a.cfg at their next round
	old := a.config()
	if cfg.AlertDir != old.AlertDir {
		a.log.Warn("alert_dir changes take effect when the agent restarts", "running", old.AlertDir, "configured", cfg.AlertDir)
		cfg.AlertDir = old.AlertDir
	}
	if cfg.HTTP.Listen != old.HTTP.Listen {
		a.stopHTTP()
		if err := a.startHTTP(cfg.HTTP.Listen); err != nil {
			a.log.Error("cannot move the HTTP listener; it stays off until the next reload", "err", err)
		}
	}
	a.mu.Lock()
	a.cfg, a.loaded, a.reloadError = cfg, time.Now().UTC(), ""
	a.mu.Unlock()

	for _, s := range a.siteList() {
		if _, ok := cfg.Sites[s.name]; ok {
			continue
		}
		a.log.Info("site removed from the configuration; stopping it", "site", s.name)
		s.stop()
		a.mu.Lock()
		delete(a.sites, s.name)
		a.mu.Unlock()
		for _, al := range a.alerts.Active(s.name) {
			a.alerts.ClearAll(s.name, al.Name)
		}
		a.metrics.DeleteSite(s.name)
	}
	for _, name := range cfg.SiteNames() {
		a.mu.Lock()
		s, ok := a.sites[name]
		a.mu.Unlock()
		if ok {
			if err := s.reconfigure(ctx, cfg.Sites[name]); err != nil {
				a.log.Error("site not reconfigured", "site", name, "err", err)
			}
			continue
		}
		s, err := newSite(a, cfg.Sites[name], nil)
		if err != nil {
			a.log.Error("site not started", "site", name, "err", err)
			continue
		}
		a.mu.Lock()
		a.sites[name] = s
		a.mu.Unlock()
		a.log.Info("site added", "site", name)
		s.start(ctx)
	}
	a.changed()
	a.log.Info("configuration reloaded")
}

// State builds the state document.
func (a *Agent) State() *State {
	a.mu.Lock()
	st := &State{
		Version: StateVersion, PID: os.Getpid(), AgentVer: a.opts.Version, Started: a.started,
		Updated: time.Now().UTC(), ConfigFile: a.opts.ConfigFile, Loaded: a.loaded, ReloadError: a.reloadError,
		Sites: map[string]*SiteState{},
	}
	if a.http != nil {
		st.HTTPListen = a.http.Addr()
	}
	a.mu.Unlock()
	for _, s := range a.siteList() {
		st.Sites[s.name] = s.snapshot()
	}
	st.Alerts = a.alerts.Active("")
	return st
}

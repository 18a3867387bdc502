package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// Alert names: pghoard's five, and two of pgvault's own.
// docs/reference/config.md says exactly when each starts and ends.
const (
	AlertAuthentication     = "authentication_error"
	AlertConfiguration      = "configuration_error"
	AlertUploadRetries      = "upload_retries_warning"
	AlertVersionMismatch    = "version_mismatch_error"
	AlertVersionUnsupported = "version_unsupported_error"
	AlertWALGap             = "wal_gap"
	AlertDrillFailed        = "drill_failed"
	AlertSyntheticFailed    = "synthetic_backup_failed"
)

// AlertNames lists every alert the agent raises.
var AlertNames = []string{AlertAuthentication, AlertConfiguration, AlertUploadRetries,
	AlertVersionMismatch, AlertVersionUnsupported, AlertWALGap, AlertDrillFailed, AlertSyntheticFailed}

// Alert is one active alert: the content of its file
// ALERT_DIR/<site>/<alert>.
type Alert struct {
	Site    string    `json:"site"`
	Name    string    `json:"alert"`
	Since   time.Time `json:"since"`
	Message string    `json:"message"`
	// Sources are the parts of the site that currently report the
	// condition (e.g. "postgres 10.0.0.5 port 5432 as user \"pgvault\"",
	// "repository", "drill"); the alert ends when the last one clears.
	Sources []string `json:"sources"`
}

type alertKey struct{ site, name string }

type alertState struct {
	since   time.Time
	message string
	sources map[string]string // source -> its latest message
}

// Alerts keeps the alert files in a folder: ALERT_DIR/<site>/<alert>,
// created when a condition starts and removed when it ends. An alert is
// active while at least one source reports it: Raise adds a source,
// Clear removes one. Files are written atomically (temporary file and
// rename). Safe for concurrent use.
type Alerts struct {
	dir      string
	clock    Clock
	log      *slog.Logger
	onChange func(al Alert, active bool)

	mu     sync.Mutex
	active map[alertKey]*alertState
}

// NewAlerts opens the alert folder, creating it if needed, and adopts the
// alert files a previous run left (keeping their start time): a condition
// that still holds is raised again, one that has ended is cleared by the
// check that would raise it.
func NewAlerts(dir string, clock Clock, log *slog.Logger) (*Alerts, error) {
	if clock == nil {
		clock = realClock{}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("alert folder: %w", err)
	}
	a := &Alerts{dir: dir, clock: clock, log: log, active: map[alertKey]*alertState{}}
	found, err := ReadAlerts(dir)
	if err != nil {
		return nil, err
	}
	for _, al := range found {
		st := &alertState{since: al.Since, message: al.Message, sources: map[string]string{}}
		for _, src := range al.Sources {
			st.sources[src] = al.Message
		}
		if len(st.sources) == 0 {
			st.sources["previous run"] = al.Message
		}
		a.active[alertKey{al.Site, al.Name}] = st
	}
	return a, nil
}

// OnChange sets a function called (without locks held) whenever an alert
// starts or ends, with the alert (when it ends: its start time and last
// message).
func (a *Alerts) OnChange(f func(al Alert, active bool)) {
	a.mu.Lock()
	a.onChange = f
	a.mu.Unlock()
}

// Raise reports that source sees condition name on site, with message.
// The alert starts (its file is created) if it was not active; otherwise
// its message is updated and its start time kept.
func (a *Alerts) Raise(site, name, source, message string) {
	a.mu.Lock()
	k := alertKey{site, name}
	st, ok := a.active[k]
	if !ok {
		st = &alertState{since: a.clock.Now().UTC(), sources: map[string]string{}}
		a.active[k] = st
	}
	changed := !ok || st.message != message || st.sources[source] != message
	st.sources[source] = message
	st.message = message
	al := a.snapshot(k, st)
	f := a.onChange
	a.mu.Unlock()
	if !changed {
		return
	}
	// The metric and the notifications first: whoever sees the file
	// then finds them agreeing with it.
	if !ok {
		if a.log != nil {
			a.log.Warn("alert started", "site", site, "alert", name, "message", message)
		}
		if f != nil {
			f(al, true)
		}
	}
	if err := a.write(al); err != nil && a.log != nil {
		a.log.Error("cannot write alert file", "site", site, "alert", name, "err", err)
	}
}

// Clear reports that source no longer sees condition name on site. The
// alert ends (its file is removed) when no source reports it any more.
func (a *Alerts) Clear(site, name, source string) {
	a.clear(site, name, func(src string) bool { return src == source })
}

// ClearAll ends alert name on site whatever reports it.
func (a *Alerts) ClearAll(site, name string) {
	a.clear(site, name, func(string) bool { return true })
}

// ClearSources removes, from every alert of site, the sources drop
// matches (e.g. nodes no longer configured).
func (a *Alerts) ClearSources(site string, drop func(name, source string) bool) {
	for _, name := range AlertNames {
		a.clear(site, name, func(src string) bool { return drop(name, src) })
	}
}

func (a *Alerts) clear(site, name string, match func(string) bool) {
	a.mu.Lock()
	k := alertKey{site, name}
	st, ok := a.active[k]
	if !ok {
		a.mu.Unlock()
		return
	}
	removed := false
	for src := range st.sources {
		if match(src) {
			delete(st.sources, src)
			removed = true
		}
	}
	if !removed {
		a.mu.Unlock()
		return
	}
	ended := len(st.sources) == 0
	al := a.snapshot(k, st)
	if ended {
		delete(a.active, k)
	} else {
		for _, m := range st.sources { // keep a message of a source still reporting
			st.message = m
			break
		}
		al = a.snapshot(k, st)
	}
	f := a.onChange
	a.mu.Unlock()
	if !ended {
		if err := a.write(al); err != nil && a.log != nil {
			a.log.Error("cannot write alert file", "site", site, "alert", name, "err", err)
		}
		return
	}
	if a.log != nil {
		a.log.Info("alert ended", "site", site, "alert", name)
	}
	if f != nil {
		f(al, false)
	}
	if err := os.Remove(a.path(site, name)); err != nil && !errors.Is(err, os.ErrNotExist) && a.log != nil {
		a.log.Error("cannot remove alert file", "site", site, "alert", name, "err", err)
	}
}

// Active lists the active alerts of site ("" for every site), by site and
// name.
func (a *Alerts) Active(site string) []Alert {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []Alert{}
	for k, st := range a.active {
		if site == "" || k.site == site {
			out = append(out, a.snapshot(k, st))
		}
	}
	sortAlerts(out)
	return out
}

// IsActive reports whether alert name is active on site.
func (a *Alerts) IsActive(site, name string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.active[alertKey{site, name}]
	return ok
}

func sortAlerts(out []Alert) {
	sort.Slice(out, func(i, j int) bool {
		if out[i].Site != out[j].Site {
			return out[i].Site < out[j].Site
		}
		return out[i].Name < out[j].Name
	})
}

func (a *Alerts) snapshot(k alertKey, st *alertState) Alert {
	al := Alert{Site: k.site, Name: k.name, Since: st.since, Message: st.message, Sources: []string{}}
	for src := range st.sources {
		al.Sources = append(al.Sources, src)
	}
	sort.Strings(al.Sources)
	return al
}

func (a *Alerts) path(site, name string) string { return filepath.Join(a.dir, site, name) }

func (a *Alerts) write(al Alert) error {
	data, err := json.MarshalIndent(al, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(a.dir, al.Site), 0o755); err != nil {
		return err
	}
	return writeFileAtomic(a.path(al.Site, al.Name), append(data, '\n'), 0o644)
}

// ReadAlerts reads the alert files in dir (for `pgvault status`, which
// works whether or not the agent runs). A missing folder has none.
func ReadAlerts(dir string) ([]Alert, error) {
	out := []Alert{}
	sites, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read alert folder: %w", err)
	}
	known := map[string]bool{}
	for _, n := range AlertNames {
		known[n] = true
	}
	for _, s := range sites {
		if !s.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(dir, s.Name()))
		if err != nil {
			return nil, fmt.Errorf("read alert folder: %w", err)
		}
		for _, f := range files {
			if !known[f.Name()] {
				continue // temporary files, foreign files
			}
			al := Alert{Site: s.Name(), Name: f.Name(), Sources: []string{}}
			data, err := os.ReadFile(filepath.Join(dir, s.Name(), f.Name()))
			if err == nil {
				err = json.Unmarshal(data, &al)
			}
			if err != nil {
				// An alert file we cannot read still means an alert.
				if fi, serr := f.Info(); serr == nil {
					al.Since = fi.ModTime().UTC()
				}
				al.Message = "unreadable alert file"
			}
			al.Site, al.Name = s.Name(), f.Name()
			out = append(out, al)
		}
	}
	sortAlerts(out)
	return out, nil
}

// writeFileAtomic writes data to name through a temporary file in the
// same folder, synced and renamed over name, then syncs the folder.
func writeFileAtomic(name string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(name)
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

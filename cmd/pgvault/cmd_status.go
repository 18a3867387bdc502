package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/cmd/pgvault/agent"
	"github.com/pgvault/pgvault/internal/redact"
	"github.com/pgvault/pgvault/internal/service"
)

func statusCommand() *cli.Command {
	return configCommand("status",
		"show every site of the agent's configuration: last backup, WAL lag, PITR window, alerts (exit 3 when an alert is active)",
		"Reads the repositories, the agent's state file and its alert files, so it works whether or not the agent runs.\n"+
			"Live figures (WAL lag, streamer, next backup) come from the state file when the agent runs.",
		"the agent's configuration", runStatus)
}

type statusReport struct {
	Agent statusAgent  `json:"agent"`
	Sites []siteStatus `json:"sites"`
}

type statusAgent struct {
	Running     bool       `json:"running"`
	PID         int        `json:"pid,omitempty"`
	StateFile   string     `json:"state_file"`
	Updated     *time.Time `json:"updated,omitempty"`
	HTTPListen  string     `json:"http_listen,omitempty"`
	ReloadError string     `json:"reload_error,omitempty"`
}

type siteStatus struct {
	Site       string              `json:"site"`
	Active     bool                `json:"active"`
	Mode       string              `json:"mode"`
	Repo       string              `json:"repo"`
	Backups    int                 `json:"backups"`
	LastBackup *service.BackupInfo `json:"last_backup"`
	BackupAge  *float64            `json:"last_backup_age_seconds"`
	NextBackup *time.Time          `json:"next_backup,omitempty"`
	WAL        walStatus           `json:"wal"`
	PITR       *service.PITRWindow `json:"pitr"`
	Stored     *int64              `json:"repo_stored_bytes"`
	Alerts     []agent.Alert       `json:"alerts"`
	Error      string              `json:"error,omitempty"`
	Live       *agent.SiteState    `json:"agent_state,omitempty"`
	stream     *agent.StreamerState
}

type walStatus struct {
	LagBytes     *int64     `json:"lag_bytes"`
	LastArchived *time.Time `json:"last_archived"`
	Streaming    *bool      `json:"streaming,omitempty"`
	Files        int        `json:"files"`
}

func runStatus(ctx context.Context, e *env, config string) error {
	cfg, err := agent.Load(config, agent.LoadOptions{})
	if err != nil {
		return usageError{err}
	}
	now := time.Now()
	st, stErr := agent.ReadState(cfg.StateFile)
	rep := statusReport{Agent: statusAgent{StateFile: cfg.StateFile}, Sites: []siteStatus{}}
	running := st.Running(now, 3*cfg.StateInterval.D+5*time.Second)
	if st != nil {
		rep.Agent.PID, rep.Agent.ReloadError = st.PID, st.ReloadError
		u := st.Updated
		rep.Agent.Updated = &u
		rep.Agent.Running = running
		if running {
			rep.Agent.HTTPListen = st.HTTPListen
		}
	}
	alerts, alertErr := agent.ReadAlerts(cfg.AlertDir)
	problems := 0
	for _, name := range cfg.SiteNames() {
		s := cfg.Sites[name]
		ss := siteStatus{Site: name, Active: s.IsActive(), Mode: s.Mode, Repo: redact.URL(s.Repo), Alerts: []agent.Alert{}}
		for _, al := range alerts {
			if al.Site == name {
				ss.Alerts = append(ss.Alerts, al)
			}
		}
		if sum, err := e.summarizeSite(ctx, s); err != nil {
			ss.Error = err.Error()
		} else {
			ss.Backups = len(sum.Backups)
			ss.LastBackup = sum.Last
			if sum.Last != nil {
				age := now.Sub(sum.Last.End).Seconds()
				ss.BackupAge = &age
			}
			ss.PITR = sum.PITR
			ss.WAL.Files = sum.WALFiles
			if !sum.LastArchived.IsZero() {
				t := sum.LastArchived.UTC()
				ss.WAL.LastArchived = &t
			}
			if sum.Stats != nil {
				b := sum.Stats.StoredBytes
				ss.Stored = &b
			}
		}
		if running && st.Sites[name] != nil {
			live := st.Sites[name]
			ss.Live = live
			ss.NextBackup = live.Backup.Next
			ss.WAL.LagBytes = live.WAL.LagBytes
			if live.WAL.LastArchived != nil && (ss.WAL.LastArchived == nil || live.WAL.LastArchived.After(*ss.WAL.LastArchived)) {
				ss.WAL.LastArchived = live.WAL.LastArchived
			}
			if live.Streamer != nil {
				c := live.Streamer.Connected
				ss.WAL.Streaming = &c
				ss.stream = live.Streamer
			}
		}
		if len(ss.Alerts) > 0 || ss.Error != "" {
			problems++
		}
		rep.Sites = append(rep.Sites, ss)
	}
	if err := e.out.emit(rep, func(w io.Writer) { printStatus(w, rep, stErr, alertErr, now) }); err != nil {
		return err
	}
	if problems > 0 {
		return problemsf("%d of %d sites have alerts or could not be read (see above)", problems, len(rep.Sites))
	}
	return nil
}

// summarizeSite opens a site's repository read-only (no lock), with
// this user's cache folder, and sums it up.
func (e *env) summarizeSite(ctx context.Context, s *agent.Site) (*service.Summary, error) {
	site := e.agentSite(s)
	r, err := site.Open(ctx, service.Access{})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return service.Summarize(ctx, r, true)
}

// agentSite is an agent site as this command opens it: with this user's
// cache folder (--cache-dir, else the default) rather than the agent's.
func (e *env) agentSite(s *agent.Site) *service.Site {
	site := s.Service()
	site.CacheDir, site.Logger = e.c.String("cache-dir"), e.log
	return site
}

func printStatus(w io.Writer, rep statusReport, stErr, alertErr error, now time.Time) {
	a := rep.Agent
	switch {
	case a.Running:
		fmt.Fprintf(w, "agent: running (pid %d), state %s updated %s ago", a.PID, a.StateFile, ago(now, *a.Updated))
		if a.HTTPListen != "" {
			fmt.Fprintf(w, ", http://%s/metrics", a.HTTPListen)
		}
		fmt.Fprintln(w)
	case a.Updated != nil:
		fmt.Fprintf(w, "agent: not running (state %s last written %s ago)\n", a.StateFile, ago(now, *a.Updated))
	default:
		fmt.Fprintf(w, "agent: not running (no state file at %s)\n", a.StateFile)
	}
	if a.ReloadError != "" {
		fmt.Fprintf(w, "agent: the last reload failed: %s\n", a.ReloadError)
	}
	if stErr != nil {
		fmt.Fprintf(w, "agent: %v\n", stErr)
	}
	if alertErr != nil {
		fmt.Fprintf(w, "alerts: %v\n", alertErr)
	}
	for _, s := range rep.Sites {
		state := "active"
		if !s.Active {
			state = "inactive"
		}
		fmt.Fprintf(w, "\nsite %s (%s, %s) %s\n", s.Site, s.Mode, state, s.Repo)
		if s.Error != "" {
			fmt.Fprintf(w, "  repository   cannot read it: %s\n", s.Error)
		} else {
			if b := s.LastBackup; b != nil {
				fmt.Fprintf(w, "  last backup  %s  %s (%s ago), %s, took %.1fs; %d backups\n", service.ShortID(b.ID), b.End.Format(time.RFC3339), ago(now, b.End), service.HumanBytes(b.Bytes), b.Seconds, s.Backups)
			} else {
				fmt.Fprintln(w, "  last backup  none yet")
			}
			if s.NextBackup != nil {
				fmt.Fprintf(w, "  next backup  %s\n", s.NextBackup.Format(time.RFC3339))
			}
			line := "  WAL          "
			if s.WAL.LagBytes != nil {
				line += fmt.Sprintf("lag %s", service.HumanBytes(*s.WAL.LagBytes))
			} else {
				line += "lag unknown (the agent is not running)"
			}
			if s.WAL.LastArchived != nil {
				line += fmt.Sprintf(", last stored %s ago", ago(now, *s.WAL.LastArchived))
			}
			if s.stream != nil {
				if s.stream.Connected {
					line += ", streaming from " + s.stream.Node
				} else {
					line += ", streamer not connected"
					if s.stream.LastError != "" {
						line += ": " + s.stream.LastError
					}
				}
			}
			fmt.Fprintln(w, line)
			if p := s.PITR; p != nil {
				fmt.Fprintf(w, "  PITR window  %s .. %s (%s)\n", p.Earliest.Format(time.RFC3339), p.Latest.Format(time.RFC3339), (time.Duration(p.Seconds) * time.Second).String())
			} else {
				fmt.Fprintln(w, "  PITR window  none: no restorable backup")
			}
			if s.Stored != nil {
				fmt.Fprintf(w, "  stored       %s\n", service.HumanBytes(*s.Stored))
			}
		}
		if len(s.Alerts) == 0 {
			fmt.Fprintln(w, "  alerts       none")
		}
		for _, al := range s.Alerts {
			fmt.Fprintf(w, "  ALERT        %s since %s: %s\n", al.Name, al.Since.Format(time.RFC3339), oneLine(al.Message))
		}
	}
}

// ago says how long ago t was, to the second.
func ago(now, t time.Time) string {
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String()
}

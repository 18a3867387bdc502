package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pgvault/pgvault/fs/verify"
	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/internal/service"
)

// drillOutcome is what one recovery drill found.
type drillOutcome struct {
	OK      bool
	Backup  string
	Message string
}

// DrillCommand builds the recovery drill: `pgvault verify latest --boot`
// of the site's repository, run as a child process of exe (this very
// binary), so that a crash or a stuck mount in the drill cannot take the
// agent down.
func DrillCommand(ctx context.Context, exe string, cfg *Site, cacheDir string) *exec.Cmd {
	args := []string{"verify", "latest", "--boot", "--timeout", cfg.Drill.Timeout.D.String(), "--owner", cfg.Drill.Owner}
	if cfg.Drill.PGBin != "" {
		args = append(args, "--pg-bin", cfg.Drill.PGBin)
	}
	if cfg.Drill.SQL != "" {
		args = append(args, "--sql", cfg.Drill.SQL)
	}
	return childCommand(ctx, exe, cfg, cacheDir, args...)
}

// childCommand runs `pgvault <args>` on the site's repository, as a child
// process of exe, with JSON output. The repository password goes by file
// when it came from one, else by PGVAULT_PASSWORD in the child's
// environment (never as an argument). On cancellation the child gets
// SIGTERM, so it can unmount and stop its server.
func childCommand(ctx context.Context, exe string, cfg *Site, cacheDir string, args ...string) *exec.Cmd {
	all := []string{"--repo", cfg.Repo, "--cache-dir", cacheDir, "--output", "json", "--log-level", "warn"}
	env := []string{}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PGVAULT_") {
			continue
		}
		env = append(env, kv)
	}
	switch from := cfg.Secrets.RepoPasswordFrom; {
	case from == "":
	case strings.HasPrefix(from, "PGVAULT_"):
		env = append(env, "PGVAULT_PASSWORD="+cfg.Secrets.RepoPassword)
	default:
		all = append(all, "--password-file", from)
	}
	cmd := exec.CommandContext(ctx, exe, append(all, args...)...)
	cmd.Env = env
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = time.Minute
	return cmd
}

// parseDrill reads verify's exit code and JSON document.
func parseDrill(code int, stdout, stderr []byte) drillOutcome {
	var doc struct {
		ID       string `json:"id"`
		OK       bool   `json:"ok"`
		Problems []struct {
			Object  string `json:"object"`
			Message string `json:"message"`
		} `json:"problems"`
	}
	jsonErr := json.Unmarshal(stdout, &doc)
	out := drillOutcome{Backup: doc.ID}
	if code == 0 && jsonErr == nil && doc.OK {
		out.OK, out.Message = true, "recovery drill passed: backup "+service.ShortID(doc.ID)+" booted and checked"
		return out
	}
	var why []string
	for _, p := range doc.Problems {
		why = append(why, strings.TrimSpace(p.Object+": "+p.Message))
	}
	if len(why) == 0 {
		lines := strings.Split(strings.TrimSpace(string(stderr)), "\n")
		if last := strings.TrimSpace(lines[len(lines)-1]); last != "" {
			why = append(why, strings.TrimPrefix(last, "pgvault: "))
		}
	}
	if len(why) == 0 {
		why = append(why, fmt.Sprintf("verify exited %d", code))
	}
	out.Message = "recovery drill failed"
	if doc.ID != "" {
		out.Message += " on backup " + service.ShortID(doc.ID)
	}
	out.Message += ": " + strings.Join(why, "; ")
	return out
}

// runDrill runs one recovery drill and records it: drill_failed starts
// when it fails and ends when one passes.
func (s *site) runDrill(ctx context.Context) {
	cfg := s.config()
	s.checkBinaries()
	start := time.Now()
	var out drillOutcome
	exe := s.a.opts.Executable
	if exe == "" {
		out.Message = "recovery drill cannot run: the agent does not know its own executable"
	} else {
		dctx, cancel := context.WithTimeout(ctx, cfg.Drill.Timeout.D+2*time.Minute)
		cmd := DrillCommand(dctx, exe, cfg, filepath.Join(s.cacheDir(), "drill"))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		s.log.Info("recovery drill starting")
		err := cmd.Run()
		cancel()
		if ctx.Err() != nil {
			return // shutting down: no verdict
		}
		code := 0
		if err != nil {
			code = -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else {
				stderr.WriteString("\n" + err.Error())
			}
		}
		out = parseDrill(code, stdout.Bytes(), stderr.Bytes())
	}
	end := s.a.clock.Now().UTC()
	dur := time.Since(start)
	m := s.a.metrics
	m.drillSuccess.WithLabelValues(s.name).Set(boolGauge(out.OK))
	m.drillLast.WithLabelValues(s.name).Set(unix(end))
	m.drillDuration.WithLabelValues(s.name).Set(dur.Seconds())
	ok := out.OK
	s.mu.Lock()
	s.lastDrill = end
	s.mu.Unlock()
	s.update(func(st *SiteState) {
		st.Drill.Last, st.Drill.OK, st.Drill.Backup, st.Drill.Seconds, st.Drill.Message = &end, &ok, out.Backup, dur.Seconds(), out.Message
	})
	if out.OK {
		s.log.Info(out.Message, "seconds", fmt.Sprintf("%.1f", dur.Seconds()))
		s.a.alerts.Clear(s.name, AlertDrillFailed, "drill")
		return
	}
	s.log.Error(out.Message)
	s.a.alerts.Raise(s.name, AlertDrillFailed, "drill", out.Message)
}

// checkBinaries starts version_mismatch_error (source "binaries") when
// this host has no PostgreSQL programs of the server's major version,
// which the drill needs to start the backup; it ends when they appear.
func (s *site) checkBinaries() {
	s.mu.Lock()
	srv := s.st.Server
	s.mu.Unlock()
	if srv == nil {
		return
	}
	major := pg.Major(srv.Version)
	if major == 0 {
		return
	}
	if _, err := verify.FindPGBin(s.config().Drill.PGBin, major); err != nil {
		s.a.alerts.Raise(s.name, AlertVersionMismatch, "binaries",
			fmt.Sprintf("the server at %s is PostgreSQL %d but this host cannot run it for the recovery drill: %v", srv.Node, major, err))
		return
	}
	s.a.alerts.Clear(s.name, AlertVersionMismatch, "binaries")
}

package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/pgvault/pgvault/internal/service"
)

// SyntheticCommand builds a synthetic backup of the site: `pgvault backup
// --synthetic --from latest`, as a child process of exe (it mounts FUSE and
// runs PostgreSQL, which must not take the agent down).
func SyntheticCommand(ctx context.Context, exe string, cfg *Site, cacheDir string) *exec.Cmd {
	sy := cfg.Synthetic
	args := []string{"backup", "--synthetic", "--from", "latest", "--owner", sy.Owner, "--timeout", sy.Timeout.D.String(),
		"--label", fmt.Sprintf("agent %s synthetic %s", cfg.Name, time.Now().UTC().Format(time.RFC3339))}
	if sy.PGBin != "" {
		args = append(args, "--pg-bin", sy.PGBin)
	}
	return childCommand(ctx, exe, cfg, cacheDir, args...)
}

// syntheticOutcome is what one synthetic backup did.
type syntheticOutcome struct {
	ID, Parent, ConsistentLSN string
	// Skipped says why no backup was taken although nothing failed (no
	// new WAL since the newest backup).
	Skipped string
}

// parseSynthetic reads backup --synthetic's exit code and JSON document.
func parseSynthetic(code int, stdout, stderr []byte) (syntheticOutcome, error) {
	var doc struct {
		ID            string `json:"id"`
		Parent        string `json:"parent"`
		ConsistentLSN string `json:"consistent_lsn"`
		Skipped       bool   `json:"skipped"`
		Reason        string `json:"reason"`
	}
	if code == 0 && json.Unmarshal(stdout, &doc) == nil {
		switch {
		case doc.Skipped:
			return syntheticOutcome{Skipped: doc.Reason}, nil
		case doc.ID != "":
			return syntheticOutcome{ID: doc.ID, Parent: doc.Parent, ConsistentLSN: doc.ConsistentLSN}, nil
		}
	}
	lines := strings.Split(strings.TrimSpace(string(stderr)), "\n")
	why := strings.TrimPrefix(strings.TrimSpace(lines[len(lines)-1]), "pgvault: ")
	if why == "" {
		why = fmt.Sprintf("backup --synthetic exited %d", code)
	}
	return syntheticOutcome{}, errors.New(why)
}

// runSynthetic takes one synthetic backup and records it. It also counts
// as a passed recovery drill of its parent up to its consistency point:
// PostgreSQL replayed that backup and its WAL, and stopped cleanly.
func (s *site) runSynthetic(ctx context.Context) error {
	cfg := s.config()
	exe := s.a.opts.Executable
	if exe == "" {
		return errors.New("synthetic backup cannot run: the agent does not know its own executable")
	}
	start := time.Now()
	s.update(func(st *SiteState) { st.Synthetic.Running = true })
	s.log.Info("synthetic backup starting")
	sctx, cancel := context.WithTimeout(ctx, cfg.Synthetic.Timeout.D+2*time.Minute)
	cmd := SyntheticCommand(sctx, exe, cfg, filepath.Join(s.cacheDir(), "synthetic"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	cancel()
	s.update(func(st *SiteState) { st.Synthetic.Running = false })
	if ctx.Err() != nil {
		return ctx.Err() // shutting down: no verdict
	}
	code := 0
	if err != nil {
		code = -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else {
			stderr.WriteString("\n" + err.Error())
		}
	}
	out, err := parseSynthetic(code, stdout.Bytes(), stderr.Bytes())
	end := s.a.clock.Now().UTC()
	dur := time.Since(start)
	m := s.a.metrics
	if err != nil {
		msg := "synthetic backup failed: " + err.Error()
		m.syntheticFailures.WithLabelValues(s.name).Inc()
		s.update(func(st *SiteState) { st.Synthetic.LastError = msg })
		s.log.Error(msg)
		s.a.alerts.Raise(s.name, AlertSyntheticFailed, "synthetic", msg)
		return err
	}
	if out.Skipped != "" {
		s.log.Info("no synthetic backup taken", "reason", out.Skipped)
		s.update(func(st *SiteState) { st.Synthetic.LastError = "" })
		s.a.alerts.Clear(s.name, AlertSyntheticFailed, "synthetic")
		return nil
	}
	m.syntheticLast.WithLabelValues(s.name).Set(unix(end))
	m.syntheticDuration.WithLabelValues(s.name).Set(dur.Seconds())
	drill := fmt.Sprintf("synthetic backup %s replayed backup %s and its WAL to %s and stopped cleanly", service.ShortID(out.ID), service.ShortID(out.Parent), out.ConsistentLSN)
	ok := true
	s.mu.Lock()
	s.lastDrill = end
	s.mu.Unlock()
	s.update(func(st *SiteState) {
		st.Synthetic.Last, st.Synthetic.Backup, st.Synthetic.Parent, st.Synthetic.ConsistentLSN = &end, out.ID, out.Parent, out.ConsistentLSN
		st.Synthetic.Seconds, st.Synthetic.LastError = dur.Seconds(), ""
		st.Synthetic.Taken++
		st.Drill.Last, st.Drill.OK, st.Drill.Backup, st.Drill.Message = &end, &ok, out.Parent, drill
	})
	m.drillSuccess.WithLabelValues(s.name).Set(1)
	m.drillLast.WithLabelValues(s.name).Set(unix(end))
	s.a.alerts.Clear(s.name, AlertSyntheticFailed, "synthetic")
	s.a.alerts.Clear(s.name, AlertDrillFailed, "drill")
	s.log.Info(drill, "seconds", fmt.Sprintf("%.1f", dur.Seconds()))
	return nil
}

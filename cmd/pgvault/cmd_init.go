package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/backup"
	"github.com/pgvault/pgvault/cmd/pgvault/agent"
	"github.com/pgvault/pgvault/internal/atomicfile"
	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/internal/pg/discover"
	"github.com/pgvault/pgvault/internal/service"
)

type initOptions struct {
	quick  bool
	pgdata string
	dir    string
	site   string
	http   string
	// asOwner marks the process root re-ran as the cluster's owner.
	asOwner bool
}

func initCommand() *cli.Command {
	var o initOptions
	return &cli.Command{
		Name:  "init",
		Usage: "set up backups of this machine's PostgreSQL with no questions (--quick): repository, first backup, agent configuration, systemd unit",
		Description: "Finds the running cluster (--pgdata, PGDATA, the running postmaster, pg_lsclusters), checks it is ready for\n" +
			"WAL streaming (`wal preflight`: nothing is changed when it is not), then in --dir creates a repository with a\n" +
			"generated password file, takes a first backup that restores on its own, writes an agent configuration and a\n" +
			"systemd unit, and prints the next three commands. Run as root, the files belong to the cluster's owner and\n" +
			"the work runs as that user. `rm -r DIR` undoes it all.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "quick", Destination: &o.quick, Usage: "do it all with the choices below (required)"},
			&cli.StringFlag{Name: "pgdata", Destination: &o.pgdata, EnvVars: []string{"PGDATA"}, Usage: "the cluster's data directory `DIR` (default: the one running cluster)"},
			&cli.StringFlag{Name: "dir", Destination: &o.dir, Usage: "`DIR` for the repository, password, configuration and state (default /var/lib/pgvault/SITE as root, else ~/pgvault/SITE)"},
			&cli.StringFlag{Name: "site", Destination: &o.site, Usage: "the site's `NAME` (default: the cluster's name from pg_lsclusters, else main)"},
			&cli.StringFlag{Name: "http", Destination: &o.http, Value: "127.0.0.1:9187", Usage: "the agent's metrics and health `ADDRESS`"},
			&cli.BoolFlag{Name: "as-owner", Destination: &o.asOwner, Hidden: true},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if !o.quick {
				return usagef("init sets up everything in one go and needs --quick (a repository alone: `pgvault repo init`)")
			}
			if c.NArg() > 0 {
				return usagef("init takes no arguments (got %q)", c.Args().First())
			}
			return runInitQuick(c.Context, e, o)
		},
	}
}

// quickReport is what init --quick did, each step with how to undo it.
type quickReport struct {
	Cluster   discover.Cluster      `json:"cluster"`
	Site      string                `json:"site"`
	Dir       string                `json:"dir"`
	Preflight []quickFinding        `json:"preflight"`
	Done      []quickStep           `json:"done"`
	Repo      *service.InitReport   `json:"repository"`
	Backup    *service.BackupReport `json:"backup"`
	Config    string                `json:"config"`
	Unit      string                `json:"systemd_unit"`
	Next      []string              `json:"next"`
	Undo      string                `json:"undo"`
}

type quickFinding struct {
	Status  string `json:"status"`
	Setting string `json:"setting"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

type quickStep struct {
	What string `json:"what"`
	Path string `json:"path,omitempty"`
}

func runInitQuick(ctx context.Context, e *env, o initOptions) error {
	cl, err := chooseCluster(ctx, o.pgdata)
	if err != nil {
		return err
	}
	site := o.site
	if site == "" {
		site = "main"
		if _, name, ok := strings.Cut(cl.Name, "/"); ok {
			site = name
		}
	}
	if !validSiteName(site) {
		return usagef("--site %q: use letters, digits, - and _", site)
	}
	dir := o.dir
	if dir == "" {
		dir = defaultQuickDir(site)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "pgvault.yaml")); err == nil {
		return usagef("%s/pgvault.yaml exists: pgvault is set up there already (remove %s to start again, or give another --dir)", dir, dir)
	}
	// Root hands the work to the cluster's owner: the owner reads the data
	// directory, passes peer authentication on the socket, and must own
	// what the agent (run as the owner) and restore_command later use.
	if os.Geteuid() == 0 && cl.UID != 0 && !o.asOwner {
		return reexecAsOwner(ctx, e, cl, dir)
	}
	return quickSetup(ctx, e, cl, site, dir, o)
}

// chooseCluster is the cluster to set up: the one in pgdata, else the
// only running one.
func chooseCluster(ctx context.Context, pgdata string) (discover.Cluster, error) {
	if pgdata != "" {
		cl, err := discover.Inspect(pgdata)
		if err != nil {
			return cl, usageError{fmt.Errorf("--pgdata: %w", err)}
		}
		if !cl.Running {
			return cl, fmt.Errorf("PostgreSQL is not running on %s: start it (pg_ctl -D %s start, or its service), then run init again", cl.DataDir, cl.DataDir)
		}
		return cl, nil
	}
	all, err := discover.Find(ctx, discover.Options{})
	if err != nil {
		return discover.Cluster{}, err
	}
	var running, stopped []string
	var pick discover.Cluster
	for _, c := range all {
		if c.Running {
			running = append(running, describeCluster(c))
			pick = c
		} else {
			stopped = append(stopped, describeCluster(c))
		}
	}
	switch len(running) {
	case 1:
		return pick, nil
	case 0:
		msg := "no running PostgreSQL found on this machine"
		if len(stopped) > 0 {
			msg += " (stopped: " + strings.Join(stopped, "; ") + ")"
		}
		return pick, usagef("%s: start it, or name its data directory with --pgdata", msg)
	}
	return pick, usagef("%d PostgreSQL clusters run here (%s): say which with --pgdata", len(running), strings.Join(running, "; "))
}

func describeCluster(c discover.Cluster) string {
	s := c.DataDir
	if c.Name != "" {
		s = c.Name + " in " + s
	}
	if c.Running {
		s += fmt.Sprintf(" on port %d", c.Port)
	}
	return s
}

func validSiteName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return s != ""
}

func defaultQuickDir(site string) string {
	if os.Geteuid() == 0 {
		return filepath.Join("/var/lib/pgvault", site)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	return filepath.Join(home, "pgvault", site)
}

// reexecAsOwner creates dir for the cluster's owner and runs this same
// command again as that user.
func reexecAsOwner(ctx context.Context, e *env, cl discover.Cluster, dir string) (err error) {
	if _, serr := os.Stat(dir); errors.Is(serr, os.ErrNotExist) {
		// A refusal (the preflight's) leaves nothing behind.
		defer func() {
			if err != nil {
				os.Remove(dir) // only when still empty
			}
		}()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chown(dir, int(cl.UID), int(cl.GID)); err != nil {
		return fmt.Errorf("give %s to %s: %w", dir, cl.Owner, err)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	args := append([]string{}, os.Args[1:]...)
	args = append(args, "--as-owner", "--dir", dir)
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, e.c.App.Writer, e.stderr
	cmd.Dir = dir
	env := os.Environ()
	if u, err := user.LookupId(strconv.FormatUint(uint64(cl.UID), 10)); err == nil {
		env = append(env, "HOME="+u.HomeDir, "USER="+u.Username, "LOGNAME="+u.Username)
	}
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: cl.UID, Gid: cl.GID}}
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return exitCode(ee.ExitCode())
		}
		return fmt.Errorf("run init as %s: %w", cl.Owner, err)
	}
	return nil
}

// exitCode is an error that makes pgvault exit with the code of the
// process it ran on its behalf, which has already said why.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

func quickSetup(ctx context.Context, e *env, cl discover.Cluster, site, dir string, o initOptions) error {
	conninfo := quickConninfo(cl)
	rep := &quickReport{Cluster: cl, Site: site, Dir: dir, Undo: "rm -r " + dir}
	pf, target, err := service.Preflight(ctx, service.PreflightOptions{Conninfo: conninfo, Slot: "pgvault", ApplicationName: "pgvault init"})
	if err != nil {
		return fmt.Errorf("init: %w (nothing was changed)", err)
	}
	for _, f := range pf.Findings {
		rep.Preflight = append(rep.Preflight, quickFinding{Status: string(f.Status), Setting: f.Setting, Message: f.Message, Fix: f.Fix})
	}
	if err := service.NotReady(pf, target); err != nil {
		e.out.emit(rep, func(w io.Writer) { printPreflight(w, pf) })
		return problemsf("%v; nothing was changed: run init again once they are done", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	done := func(what, path string) { rep.Done = append(rep.Done, quickStep{What: what, Path: path}) }

	pwFile := filepath.Join(dir, site+".pass")
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	password := base64.RawURLEncoding.EncodeToString(secret)
	if err := atomicfile.WriteFile(pwFile, []byte(password+"\n"), atomicfile.Options{Perm: 0o600}); err != nil {
		return err
	}
	done("generated the repository password (keep a copy apart from the backups: without it they cannot be read)", pwFile)

	repoURL := e.c.String("repo")
	if repoURL == "" {
		repoURL = filepath.Join(dir, "repo")
	}
	cache := filepath.Join(dir, "cache")
	s := &service.Site{Name: site, Repo: repoURL, CacheDir: cache, Logger: e.log, KeyCache: true, CompressionLevel: e.c.Int("compression-level"),
		Password: service.Password{Secret: []byte(password), From: pwFile, File: pwFile}}
	if rep.Repo, err = s.Init(ctx, service.InitOptions{}); err != nil {
		return err
	}
	done("created an encrypted repository", rep.Repo.Location)

	connect, err := service.ConnectTo(conninfo, "pgvault init")
	if err != nil {
		return err
	}
	// Standalone: the WAL streaming the agent will do has not started, so
	// the first backup carries the WAL it needs to restore on its own.
	if rep.Backup, err = s.Backup(ctx, connect, service.BackupOptions{Label: "pgvault init", FastCheckpoint: true, Standalone: true,
		Method: backup.MethodAuto, DataDir: cl.DataDir}); err != nil {
		return fmt.Errorf("first backup: %w", err)
	}
	done(fmt.Sprintf("took the first backup, %s (%s, restores without a WAL archive)", service.ShortID(rep.Backup.ID), service.HumanBytes(rep.Backup.BytesRead)), "")

	rep.Config = filepath.Join(dir, "pgvault.yaml")
	conf := quickConfig(site, conninfo, repoURL, pwFile, cache, dir, o.http)
	if _, err := agent.Parse([]byte(conf), rep.Config); err != nil {
		return fmt.Errorf("the agent configuration init wrote does not parse (a bug): %w", err)
	}
	if err := atomicfile.WriteFile(rep.Config, []byte(conf), atomicfile.Options{Perm: 0o600}); err != nil {
		return err
	}
	done("wrote the agent configuration: WAL streaming over slot pgvault, a backup every day, 7 kept", rep.Config)

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	owner := cl.Owner
	rep.Unit = filepath.Join(dir, "pgvault-agent-"+site+".service")
	if err := atomicfile.WriteFile(rep.Unit, []byte(quickUnit(exe, owner, rep.Config, dir, cl.DataDir, rep.Unit)), atomicfile.Options{Perm: 0o644}); err != nil {
		return err
	}
	done("wrote a systemd unit for the agent (not installed)", rep.Unit)

	unitName := filepath.Base(rep.Unit)
	rep.Next = []string{
		fmt.Sprintf("sudo cp %s /etc/systemd/system/ && sudo systemctl enable --now %s", rep.Unit, unitName),
		fmt.Sprintf("pgvault status --config %s", rep.Config),
		fmt.Sprintf("pgvault --repo %s --password-file %s list", repoURL, pwFile),
	}
	return e.out.emit(rep, func(w io.Writer) {
		fmt.Fprintf(w, "PostgreSQL %s in %s (port %d, owner %s) is ready for WAL streaming.\n", pf.ServerVersion, cl.DataDir, cl.Port, owner)
		for _, d := range rep.Done {
			if d.Path != "" {
				fmt.Fprintf(w, "  - %s: %s\n", d.What, d.Path)
			} else {
				fmt.Fprintf(w, "  - %s\n", d.What)
			}
		}
		fmt.Fprintln(w, "Next:")
		for i, n := range rep.Next {
			fmt.Fprintf(w, "  %d. %s\n", i+1, n)
		}
		fmt.Fprintf(w, "To undo: stop the agent if you started it, `%s`, and once the agent has created it, SELECT pg_drop_replication_slot('pgvault').\n", rep.Undo)
	})
}

// quickConninfo reaches the cluster over its socket as its owner (peer
// authentication, the packaged default), else over TCP on localhost.
func quickConninfo(cl discover.Cluster) string {
	host := cl.SocketDir
	if host == "" {
		host = "127.0.0.1"
	}
	return fmt.Sprintf("host=%s port=%d user=%s dbname=postgres", pg.QuoteConnValue(host), cl.Port, pg.QuoteConnValue(cl.Owner))
}

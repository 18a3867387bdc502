package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/pgvault/pgvault/cmd/pgvault/agent"
	"github.com/pgvault/pgvault/fs/verify"
	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/internal/service"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/stream"
)

type doctorOptions struct {
	config string
}

func doctorCommand() *cli.Command {
	var o doctorOptions
	return &cli.Command{
		Name:  "doctor",
		Usage: "check what pgvault needs: PostgreSQL settings, repository access, secrets, FUSE, PostgreSQL programs, free disk (exit 3 on a problem)",
		Description: "With --config, every site of the agent's configuration; without, the global --pg and --repo.\n" +
			"One line per finding, with the fix for anything that is not ok.",
		Flags: []cli.Flag{
			agentConfigFlag(&o.config),
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			if c.NArg() > 0 {
				return usagef("doctor takes no arguments (got %q)", c.Args().First())
			}
			return runDoctor(c.Context, e, o)
		},
	}
}

// Finding statuses (as wal preflight's).
const (
	findingOK      = "ok"
	findingWarning = "warning"
	findingError   = "error"
)

type doctorFinding struct {
	Site    string `json:"site,omitempty"`
	Check   string `json:"check"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

type doctorReport struct {
	OK       bool            `json:"ok"`
	Config   string          `json:"config,omitempty"`
	Findings []doctorFinding `json:"findings"`
}

// doctorPGTimeout bounds each PostgreSQL check.
const doctorPGTimeout = 15 * time.Second

type doctor struct {
	e      *env
	rep    doctorReport
	majors map[int]bool // server major versions seen
	drill  bool         // some site runs recovery drills
}

func (d *doctor) add(f doctorFinding) {
	d.rep.Findings = append(d.rep.Findings, f)
}

func runDoctor(ctx context.Context, e *env, o doctorOptions) error {
	d := &doctor{e: e, majors: map[int]bool{}, rep: doctorReport{Config: o.config, Findings: []doctorFinding{}}}
	var dirs []diskDir
	if o.config != "" {
		cfg, err := agent.Load(o.config, agent.LoadOptions{})
		if err != nil {
			d.add(doctorFinding{Check: "config", Status: findingError, Message: oneLine(err.Error()),
				Fix: "correct the file (docs/reference/config.md describes every field)"})
			return d.finish()
		}
		d.add(doctorFinding{Check: "config", Status: findingOK, Message: fmt.Sprintf("%s: %d sites", o.config, len(cfg.Sites))})
		switch _, err := agent.Load(o.config, agent.LoadOptions{Strict: true}); {
		case errors.Is(err, agent.ErrInsecureSecret):
			d.add(doctorFinding{Check: "secrets", Status: findingError, Message: oneLine(err.Error()),
				Fix: "make secret files readable by the agent's user only (chmod 600, chown)"})
		case err == nil:
			d.add(doctorFinding{Check: "secrets", Status: findingOK, Message: "no secret file is readable by every user"})
		}
		for _, name := range cfg.SiteNames() {
			s := cfg.Sites[name]
			if !s.IsActive() {
				d.add(doctorFinding{Site: name, Check: "site", Status: findingOK, Message: "inactive (active: false): not checked"})
				continue
			}
			d.drill = d.drill || s.Drill.Every() > 0
			for _, conninfo := range s.PG {
				d.checkPostgres(ctx, name, conninfo, s.Secrets.PGPassword, s.Slot, s.Mode)
			}
			d.checkRepo(ctx, name, func() (*repo.Repository, error) { return e.agentSite(s).Open(ctx, service.Access{}) })
			if s.CacheDir != "" {
				dirs = append(dirs, diskDir{"cache", s.CacheDir})
			}
			dirs = append(dirs, diskDir{"maintenance file folder", filepath.Dir(s.MaintenanceModeFile)})
		}
		dirs = append(dirs, diskDir{"state", filepath.Dir(cfg.StateFile)}, diskDir{"alerts", cfg.AlertDir})
		if cfg.CacheDir != "" {
			dirs = append(dirs, diskDir{"cache", cfg.CacheDir})
		}
	} else {
		pg := e.c.String("pg")
		if pg == "" && os.Getenv("PGHOST") == "" {
			d.add(doctorFinding{Check: "postgres", Status: findingWarning, Message: "no PostgreSQL given: not checked",
				Fix: "give --pg CONNINFO (or PGHOST...) or --config FILE"})
		} else {
			d.checkPostgres(ctx, "", pg, "", stream.DefaultSlot, "stream")
		}
		if e.c.String("repo") == "" {
			d.add(doctorFinding{Check: "repository", Status: findingWarning, Message: "no repository given: not checked",
				Fix: "give --repo URL (or PGVAULT_REPO) or --config FILE"})
		} else {
			if pf := e.c.String("password-file"); pf != "" {
				if err := agent.CheckSecretFile("--password-file", pf); err != nil {
					d.add(doctorFinding{Check: "secrets", Status: findingError, Message: oneLine(err.Error()), Fix: "chmod 600 " + pf})
				}
			}
			d.checkRepo(ctx, "", func() (*repo.Repository, error) {
				site, err := e.site(askPassword)
				if err != nil {
					return nil, err
				}
				return site.Open(ctx, service.Access{})
			})
		}
	}
	dirs = append(dirs, diskDir{"cache", e.cacheDir()}, diskDir{"scratch (verify --boot, mount --scratch)", os.TempDir()})
	d.checkFUSE()
	d.checkBinaries()
	d.checkDisks(dirs)
	return d.finish()
}

func (d *doctor) finish() error {
	d.rep.OK = true
	var errs []string
	for _, f := range d.rep.Findings {
		if f.Status == findingError {
			d.rep.OK = false
			errs = append(errs, f.Check)
		}
	}
	if err := d.e.out.emit(d.rep, func(w io.Writer) { printDoctor(w, d.rep) }); err != nil {
		return err
	}
	if !d.rep.OK {
		return problemsf("doctor found %d problems (%s): apply the fixes above", len(errs), strings.Join(dedupe(errs), ", "))
	}
	return nil
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

func printDoctor(w io.Writer, rep doctorReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, f := range rep.Findings {
		check := f.Check
		if f.Site != "" {
			check = f.Site + ": " + check
		}
		line := fmt.Sprintf("%s\t%s\t%s", f.Status, check, f.Message)
		if f.Fix != "" && f.Status != findingOK {
			line += " — fix: " + f.Fix
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	if rep.OK {
		fmt.Fprintln(w, "no problems found")
	}
}

// checkPostgres runs wal preflight's checks (stream.Preflight and a
// replication connection probe) against one node.
func (d *doctor) checkPostgres(ctx context.Context, site, conninfo, password, slot, mode string) {
	ctx, cancel := context.WithTimeout(ctx, doctorPGTimeout)
	defer cancel()
	cfg, err := sqlSession(conninfo, "pgvault doctor")
	if err != nil {
		d.add(doctorFinding{Site: site, Check: "postgres", Status: findingError, Message: oneLine(err.Error()), Fix: "correct the conninfo"})
		return
	}
	if password != "" {
		cfg.Password = password
	}
	check := "postgres " + pg.Target(&cfg.Config)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		d.add(doctorFinding{Site: site, Check: check, Status: findingError, Message: oneLine(pg.Explain(err, &cfg.Config).Error()),
			Fix: "make PostgreSQL reachable with these credentials (the message says how)"})
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rep, err := stream.Preflight(ctx, conn, stream.PreflightOptions{Slot: slot})
	if err != nil {
		d.add(doctorFinding{Site: site, Check: check, Status: findingError, Message: oneLine(err.Error()), Fix: "see the PostgreSQL server log"})
		return
	}
	probe, _ := stream.ProbeReplication(ctx, &cfg.Config)
	rep.Add(probe)
	if m := pg.Major(rep.ServerVersion); m > 0 {
		d.majors[m] = true
	}
	for _, f := range rep.Findings {
		if mode == "archive" && f.Setting == "slot" {
			continue // archive mode uses no slot
		}
		status := string(f.Status)
		d.add(doctorFinding{Site: site, Check: check + " " + f.Setting, Status: status, Message: f.Message, Fix: f.Fix})
	}
}

// checkRepo opens the repository and lists its backups and WAL.
func (d *doctor) checkRepo(ctx context.Context, site string, open func() (*repo.Repository, error)) {
	r, err := open()
	if err != nil {
		fix := "check the repository URL, its credentials and the password"
		switch {
		case errors.Is(err, repo.ErrNotRepository):
			fix = "create it with `pgvault repo init`, or correct the URL"
		case errors.Is(err, repo.ErrWrongPassword), errors.Is(err, repo.ErrNoPassword):
			fix = "give the repository's password (password_file, PGVAULT_PASSWORD)"
		}
		d.add(doctorFinding{Site: site, Check: "repository", Status: findingError, Message: oneLine(err.Error()), Fix: fix})
		return
	}
	defer r.Close()
	snaps, err := r.Snapshots(ctx)
	if err == nil {
		var walFiles []repo.WALEntry
		walFiles, err = r.ListWAL(ctx)
		if err == nil {
			d.add(doctorFinding{Site: site, Check: "repository", Status: findingOK,
				Message: fmt.Sprintf("%s opens: %d snapshots, %d WAL files", r.Backend().Location(), len(snaps), len(walFiles))})
			return
		}
	}
	d.add(doctorFinding{Site: site, Check: "repository", Status: findingError, Message: oneLine(err.Error()),
		Fix: "check the storage's permissions and connectivity"})
}

// checkFUSE looks for /dev/fuse and fusermount3 (mount, verify --boot and
// the agent's drills need FUSE).
func (d *doctor) checkFUSE() {
	severity := findingWarning
	why := "needed by `pgvault mount` and `verify --boot`"
	if d.drill {
		severity, why = findingError, "needed by the recovery drills the configuration turns on"
	}
	fi, err := os.Stat("/dev/fuse")
	switch {
	case err != nil:
		d.add(doctorFinding{Check: "fuse", Status: severity, Message: "/dev/fuse is missing: " + why,
			Fix: "modprobe fuse (or give the container --device /dev/fuse)"})
	case fi.Mode()&os.ModeCharDevice == 0:
		d.add(doctorFinding{Check: "fuse", Status: severity, Message: "/dev/fuse is not a character device: " + why, Fix: "modprobe fuse"})
	case unix.Access("/dev/fuse", unix.R_OK|unix.W_OK) != nil:
		d.add(doctorFinding{Check: "fuse", Status: severity, Message: "/dev/fuse is not readable and writable by this user: " + why,
			Fix: "run mounts and drills as root (the FUSE mount runs as root; PostgreSQL reads it as its owner)"})
	default:
		d.add(doctorFinding{Check: "fuse", Status: findingOK, Message: "/dev/fuse is usable"})
	}
	if p, err := exec.LookPath("fusermount3"); err == nil {
		d.add(doctorFinding{Check: "fusermount3", Status: findingOK, Message: p})
	} else {
		d.add(doctorFinding{Check: "fusermount3", Status: findingWarning,
			Message: "fusermount3 not found: mounts work as root without it, but clearing a mount left by a crash needs it (or umount)",
			Fix:     "apt-get install fuse3"})
	}
}

// checkBinaries looks for PostgreSQL server programs of the servers'
// major versions (verify --boot and drills start PostgreSQL on a backup;
// restores on this host need them too).
func (d *doctor) checkBinaries() {
	installed := installedMajors()
	severity := findingWarning
	if d.drill {
		severity = findingError
	}
	if len(d.majors) == 0 {
		if len(installed) == 0 {
			d.add(doctorFinding{Check: "postgresql programs", Status: severity,
				Message: "no PostgreSQL server programs found (pg_config, /usr/lib/postgresql/*/bin): `verify --boot` and drills cannot start a backup here",
				Fix:     "apt-get install postgresql-<major> (the servers' major version)"})
			return
		}
		d.add(doctorFinding{Check: "postgresql programs", Status: findingOK, Message: "installed: PostgreSQL " + joinInts(installed)})
		return
	}
	for _, m := range sortedInts(d.majors) {
		dir, err := verify.FindPGBin("", m)
		if err != nil {
			d.add(doctorFinding{Check: "postgresql programs", Status: severity,
				Message: fmt.Sprintf("the server is PostgreSQL %d but this host has no PostgreSQL %d programs (installed: %s): `verify --boot` and drills cannot start its backups", m, m, joinInts(installed)),
				Fix:     fmt.Sprintf("apt-get install postgresql-%d", m)})
			continue
		}
		d.add(doctorFinding{Check: "postgresql programs", Status: findingOK, Message: fmt.Sprintf("PostgreSQL %d programs in %s", m, dir)})
	}
}

func installedMajors() []int {
	seen := map[int]bool{}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	for _, p := range dirs {
		if m, err := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p)))); err == nil {
			seen[m] = true
		}
	}
	if out, err := exec.Command("pg_config", "--version").Output(); err == nil {
		if f := strings.Fields(string(out)); len(f) >= 2 {
			if m := pg.Major(f[1]); m > 0 {
				seen[m] = true
			}
		}
	}
	return sortedInts(seen)
}

func sortedInts(m map[int]bool) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

func joinInts(v []int) string {
	if len(v) == 0 {
		return "none"
	}
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

type diskDir struct{ what, path string }

// Free space thresholds.
const (
	diskWarn  = 1 << 30
	diskError = 100 << 20
)

// checkDisks reports free space and writability of the folders pgvault
// writes to. A folder that does not exist yet is judged by the nearest
// existing parent (pgvault creates it).
func (d *doctor) checkDisks(dirs []diskDir) {
	seen := map[string]bool{}
	for _, dd := range dirs {
		if dd.path == "" || seen[dd.path] {
			continue
		}
		seen[dd.path] = true
		p := dd.path
		for {
			if _, err := os.Stat(p); err == nil || p == "/" || p == "." {
				break
			}
			p = filepath.Dir(p)
		}
		check := "disk " + dd.what
		var fs unix.Statfs_t
		if err := unix.Statfs(p, &fs); err != nil {
			d.add(doctorFinding{Check: check, Status: findingError, Message: fmt.Sprintf("%s: %v", dd.path, err), Fix: "create the folder or correct the path"})
			continue
		}
		free := int64(fs.Bavail) * int64(fs.Bsize)
		where := dd.path
		if p != dd.path {
			where += " (not created yet; " + p + ")"
		}
		if err := unix.Access(p, unix.W_OK); err != nil {
			d.add(doctorFinding{Check: check, Status: findingError, Message: fmt.Sprintf("%s is not writable by this user", where),
				Fix: fmt.Sprintf("chown the folder to the user pgvault runs as, or choose another (%s)", dd.what)})
			continue
		}
		msg := fmt.Sprintf("%s: %s free", where, humanBytes(free))
		switch {
		case free < diskError:
			d.add(doctorFinding{Check: check, Status: findingError, Message: msg, Fix: "free space on that file system, or move the folder"})
		case free < diskWarn:
			d.add(doctorFinding{Check: check, Status: findingWarning, Message: msg, Fix: "free space on that file system, or move the folder"})
		default:
			d.add(doctorFinding{Check: check, Status: findingOK, Message: msg})
		}
	}
}

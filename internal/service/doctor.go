package service

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgvault/pgvault/fs/verify"
	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/repo"
)

// Finding statuses (as wal preflight's).
const (
	FindingOK      = "ok"
	FindingWarning = "warning"
	FindingError   = "error"
)

type Finding struct {
	Site    string `json:"site,omitempty"`
	Check   string `json:"check"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

type DoctorReport struct {
	OK       bool      `json:"ok"`
	Config   string    `json:"config,omitempty"`
	Findings []Finding `json:"findings"`
}

// doctorPGTimeout bounds each PostgreSQL check.
const doctorPGTimeout = 15 * time.Second

// Doctor collects the findings of `pgvault doctor`: each check adds
// one or more, with the fix for anything that is not ok.
type Doctor struct {
	Report DoctorReport
	majors map[int]bool // server major versions seen
	drill  bool         // some site runs recovery drills
}

func (d *Doctor) Add(f Finding) {
	d.Report.Findings = append(d.Report.Findings, f)
}

// NewDoctor starts a report; config is the agent configuration checked
// ("" for the global flags).
func NewDoctor(config string) *Doctor {
	return &Doctor{majors: map[int]bool{}, Report: DoctorReport{Config: config, Findings: []Finding{}}}
}

// ExpectDrills says that some site runs recovery drills, which makes a
// missing FUSE or missing PostgreSQL programs an error, not a warning.
func (d *Doctor) ExpectDrills() { d.drill = true }

// Finish sets the report's verdict: a *Problems error naming the checks
// that failed, or nil.
func (d *Doctor) Finish() error {
	d.Report.OK = true
	var errs []string
	for _, f := range d.Report.Findings {
		if f.Status == FindingError {
			d.Report.OK = false
			if !slices.Contains(errs, f.Check) {
				errs = append(errs, f.Check)
			}
		}
	}
	if !d.Report.OK {
		return problemsf("doctor found %d problems (%s): apply the fixes above", len(errs), strings.Join(errs, ", "))
	}
	return nil
}

// CheckPostgres runs wal preflight's checks (Preflight) against one node
// of a site ("" on the command line); mode "archive" needs no slot.
func (d *Doctor) CheckPostgres(ctx context.Context, site, conninfo, password, slot, mode string) {
	ctx, cancel := context.WithTimeout(ctx, doctorPGTimeout)
	defer cancel()
	rep, target, err := Preflight(ctx, PreflightOptions{Conninfo: conninfo, Password: password, Slot: slot, ApplicationName: "pgvault doctor"})
	var unreachable *pg.Failure
	switch {
	case errors.Is(err, pg.ErrBadConninfo):
		d.Add(Finding{Site: site, Check: "postgres", Status: FindingError, Message: oneLine(err.Error()), Fix: "correct the conninfo"})
		return
	case errors.As(err, &unreachable):
		d.Add(Finding{Site: site, Check: "postgres " + target, Status: FindingError, Message: oneLine(err.Error()),
			Fix: "make PostgreSQL reachable with these credentials (the message says how)"})
		return
	case err != nil:
		d.Add(Finding{Site: site, Check: "postgres " + target, Status: FindingError, Message: oneLine(err.Error()), Fix: "see the PostgreSQL server log"})
		return
	}
	if m := pg.Major(rep.ServerVersion); m > 0 {
		d.majors[m] = true
	}
	for _, f := range rep.Findings {
		if mode == "archive" && f.Setting == "slot" {
			continue // archive mode uses no slot
		}
		d.Add(Finding{Site: site, Check: "postgres " + target + " " + f.Setting, Status: string(f.Status), Message: f.Message, Fix: f.Fix})
	}
}

// CheckRepo opens the site's repository and lists its backups and WAL.
func (d *Doctor) CheckRepo(ctx context.Context, name string, site *Site) {
	r, err := site.Open(ctx, Access{})
	if err != nil {
		fix := "check the repository URL, its credentials and the password"
		switch {
		case errors.Is(err, repo.ErrNotRepository):
			fix = "create it with `pgvault repo init`, or correct the URL"
		case errors.Is(err, repo.ErrWrongPassword), errors.Is(err, repo.ErrNoPassword):
			fix = "give the repository's password (password_file, PGVAULT_PASSWORD)"
		}
		d.Add(Finding{Site: name, Check: "repository", Status: FindingError, Message: oneLine(err.Error()), Fix: fix})
		return
	}
	defer r.Close()
	snaps, err := r.Snapshots(ctx)
	if err == nil {
		var walFiles []repo.WALEntry
		walFiles, err = r.ListWAL(ctx)
		if err == nil {
			d.Add(Finding{Site: name, Check: "repository", Status: FindingOK,
				Message: fmt.Sprintf("%s opens: %d snapshots, %d WAL files", r.Backend().Location(), len(snaps), len(walFiles))})
			return
		}
	}
	d.Add(Finding{Site: name, Check: "repository", Status: FindingError, Message: oneLine(err.Error()),
		Fix: "check the storage's permissions and connectivity"})
}

// CheckFUSE looks for /dev/fuse and fusermount3 (mount, verify --boot and
// the agent's drills need FUSE).
func (d *Doctor) CheckFUSE() {
	severity := FindingWarning
	why := "needed by `pgvault mount` and `verify --boot`"
	if d.drill {
		severity, why = FindingError, "needed by the recovery drills the configuration turns on"
	}
	fi, err := os.Stat("/dev/fuse")
	switch {
	case err != nil:
		d.Add(Finding{Check: "fuse", Status: severity, Message: "/dev/fuse is missing: " + why,
			Fix: "modprobe fuse (or give the container --device /dev/fuse)"})
	case fi.Mode()&os.ModeCharDevice == 0:
		d.Add(Finding{Check: "fuse", Status: severity, Message: "/dev/fuse is not a character device: " + why, Fix: "modprobe fuse"})
	case unix.Access("/dev/fuse", unix.R_OK|unix.W_OK) != nil:
		d.Add(Finding{Check: "fuse", Status: severity, Message: "/dev/fuse is not readable and writable by this user: " + why,
			Fix: "run mounts and drills as root (the FUSE mount runs as root; PostgreSQL reads it as its owner)"})
	default:
		d.Add(Finding{Check: "fuse", Status: FindingOK, Message: "/dev/fuse is usable"})
	}
	if p, err := exec.LookPath("fusermount3"); err == nil {
		d.Add(Finding{Check: "fusermount3", Status: FindingOK, Message: p})
	} else {
		d.Add(Finding{Check: "fusermount3", Status: FindingWarning,
			Message: "fusermount3 not found: mounts work as root without it, but clearing a mount left by a crash needs it (or umount)",
			Fix:     "apt-get install fuse3"})
	}
}

// CheckBinaries looks for PostgreSQL server programs of the servers'
// major versions (verify --boot and drills start PostgreSQL on a backup;
// restores on this host need them too).
func (d *Doctor) CheckBinaries() {
	installed := installedMajors()
	severity := FindingWarning
	if d.drill {
		severity = FindingError
	}
	if len(d.majors) == 0 {
		if len(installed) == 0 {
			d.Add(Finding{Check: "postgresql programs", Status: severity,
				Message: "no PostgreSQL server programs found (pg_config, /usr/lib/postgresql/*/bin): `verify --boot` and drills cannot start a backup here",
				Fix:     "apt-get install postgresql-<major> (the servers' major version)"})
			return
		}
		d.Add(Finding{Check: "postgresql programs", Status: FindingOK, Message: "installed: PostgreSQL " + joinInts(installed)})
		return
	}
	for _, m := range slices.Sorted(maps.Keys(d.majors)) {
		dir, err := verify.FindPGBin("", m)
		if err != nil {
			d.Add(Finding{Check: "postgresql programs", Status: severity,
				Message: fmt.Sprintf("the server is PostgreSQL %d but this host has no PostgreSQL %d programs (installed: %s): `verify --boot` and drills cannot start its backups", m, m, joinInts(installed)),
				Fix:     fmt.Sprintf("apt-get install postgresql-%d", m)})
			continue
		}
		d.Add(Finding{Check: "postgresql programs", Status: FindingOK, Message: fmt.Sprintf("PostgreSQL %d programs in %s", m, dir)})
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
	return slices.Sorted(maps.Keys(seen))
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

// DiskDir is a folder pgvault writes to, and what for.
type DiskDir struct{ What, Path string }

// Free space thresholds.
const (
	diskWarn  = 1 << 30
	diskError = 100 << 20
)

// CheckDisks reports free space and writability of the folders pgvault
// writes to. A folder that does not exist yet is judged by the nearest
// existing parent (pgvault creates it).
func (d *Doctor) CheckDisks(dirs []DiskDir) {
	seen := map[string]bool{}
	for _, dd := range dirs {
		if dd.Path == "" || seen[dd.Path] {
			continue
		}
		seen[dd.Path] = true
		p := dd.Path
		for {
			if _, err := os.Stat(p); err == nil || p == "/" || p == "." {
				break
			}
			p = filepath.Dir(p)
		}
		check := "disk " + dd.What
		var fs unix.Statfs_t
		if err := unix.Statfs(p, &fs); err != nil {
			d.Add(Finding{Check: check, Status: FindingError, Message: fmt.Sprintf("%s: %v", dd.Path, err), Fix: "create the folder or correct the path"})
			continue
		}
		free := int64(fs.Bavail) * int64(fs.Bsize)
		where := dd.Path
		if p != dd.Path {
			where += " (not created yet; " + p + ")"
		}
		if err := unix.Access(p, unix.W_OK); err != nil {
			d.Add(Finding{Check: check, Status: FindingError, Message: fmt.Sprintf("%s is not writable by this user", where),
				Fix: fmt.Sprintf("chown the folder to the user pgvault runs as, or choose another (%s)", dd.What)})
			continue
		}
		msg := fmt.Sprintf("%s: %s free", where, HumanBytes(free))
		switch {
		case free < diskError:
			d.Add(Finding{Check: check, Status: FindingError, Message: msg, Fix: "free space on that file system, or move the folder"})
		case free < diskWarn:
			d.Add(Finding{Check: check, Status: FindingWarning, Message: msg, Fix: "free space on that file system, or move the folder"})
		default:
			d.Add(Finding{Check: check, Status: FindingOK, Message: msg})
		}
	}
}

// oneLine folds a message onto one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// HumanBytes writes a size in binary units ("1.5 GiB").
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

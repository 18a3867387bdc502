package agent

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/pgvault/pgvault/internal/redact"
	"github.com/pgvault/pgvault/internal/service"
	"github.com/pgvault/pgvault/repo"
)

// LoadOptions tune Load.
type LoadOptions struct {
	// Getenv reads the environment (nil: os.Getenv).
	Getenv func(string) string
	// Strict refuses secret files (and a configuration file holding a
	// password) that every user of the machine may read: the agent loads
	// with it; status and doctor report instead.
	Strict bool
}

// Load reads, parses and validates the configuration file and resolves
// every site's secrets: for the repository password
// PGVAULT_SITE_<SITE>_PASSWORD, then PGVAULT_PASSWORD, then password_file;
// for the PostgreSQL password PGVAULT_SITE_<SITE>_PGPASSWORD, then
// pg_password_file (else libpq's own: password= in pg, PGPASSWORD,
// ~/.pgpass). Under systemd's StateDirectory= (STATE_DIRECTORY set) the
// default state_file, alert_dir and maintenance_mode_file go there.
func Load(path string, opts LoadOptions) (*Config, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	stateDir, _, _ := strings.Cut(getenv("STATE_DIRECTORY"), ":")
	cfg, err := parse(data, path, stateDir)
	if err != nil {
		return nil, err
	}
	if opts.Strict {
		if err := checkConfigFilePerms(cfg, path); err != nil {
			return nil, err
		}
	}
	for _, name := range cfg.SiteNames() {
		s := cfg.Sites[name]
		if err := s.resolveSecrets(getenv, opts.Strict); err != nil {
			return nil, err
		}
	}
	if err := cfg.resolveWebhookSecret(opts.Strict); err != nil {
		return nil, err
	}
	return cfg, nil
}

// SiteNames lists the sites in name order.
func (c *Config) SiteNames() []string { return slices.Sorted(maps.Keys(c.Sites)) }

// ErrInsecureSecret is matched by a secret file any user may read.
var ErrInsecureSecret = errors.New("secret readable by every user")

type insecureError struct{ msg string }

func (e *insecureError) Error() string        { return e.msg }
func (e *insecureError) Is(target error) bool { return target == ErrInsecureSecret }

// CheckSecretFile fails when path may be read by every user of the
// machine, with the command that fixes it.
func CheckSecretFile(field, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	if fi.Mode().Perm()&0o004 != 0 {
		return &insecureError{fmt.Sprintf("%s %s is readable by every user (mode %04o): run `chmod o-rwx %s` (and chown it to the agent's user); the agent refuses world-readable secrets",
			field, path, fi.Mode().Perm(), path)}
	}
	return nil
}

// checkConfigFilePerms refuses a world-readable configuration file that
// holds a PostgreSQL password.
func checkConfigFilePerms(cfg *Config, path string) error {
	for _, name := range cfg.SiteNames() {
		for _, n := range cfg.Sites[name].PG {
			if !redact.HasPassword(n) {
				continue
			}
			fi, err := os.Stat(path)
			if err == nil && fi.Mode().Perm()&0o004 != 0 {
				return &insecureError{fmt.Sprintf("config %s holds a password in sites.%s.pg and is readable by every user (mode %04o): run `chmod o-rwx %s`, or move the password to sites.%s.pg_password_file",
					path, name, fi.Mode().Perm(), path, name)}
			}
		}
	}
	return nil
}

func (s *Site) resolveSecrets(getenv func(string) string, strict bool) error {
	p := "sites." + s.Name
	s.Secrets = Secrets{}
	switch {
	case getenv(RepoPasswordEnv(s.Name)) != "":
		s.Secrets.RepoPassword, s.Secrets.RepoPasswordFrom = getenv(RepoPasswordEnv(s.Name)), RepoPasswordEnv(s.Name)
	case getenv("PGVAULT_PASSWORD") != "":
		s.Secrets.RepoPassword, s.Secrets.RepoPasswordFrom = getenv("PGVAULT_PASSWORD"), "PGVAULT_PASSWORD"
	case s.PasswordFile != "":
		pw, err := readSecret(p+".password_file", s.PasswordFile, strict)
		if err != nil {
			return err
		}
		s.Secrets.RepoPassword, s.Secrets.RepoPasswordFrom = pw, s.PasswordFile
	}
	switch {
	case getenv(PGPasswordEnv(s.Name)) != "":
		s.Secrets.PGPassword, s.Secrets.PGPasswordFrom = getenv(PGPasswordEnv(s.Name)), PGPasswordEnv(s.Name)
	case s.PGPasswordFile != "":
		pw, err := readSecret(p+".pg_password_file", s.PGPasswordFile, strict)
		if err != nil {
			return err
		}
		s.Secrets.PGPassword, s.Secrets.PGPasswordFrom = pw, s.PGPasswordFile
	}
	return nil
}

// readSecret returns the first line of a secret file.
func readSecret(field, path string, strict bool) (string, error) {
	if strict {
		if err := CheckSecretFile(field, path); err != nil {
			return "", err
		}
	}
	line, err := service.ReadSecretFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	return line, nil
}

// Service is the site as the service layer takes it: its repository,
// password (and where it came from), cache folder and compression level.
// The agent adds its logger, clock and retry callbacks.
func (s *Site) Service() *service.Site {
	pw := service.Password{Secret: []byte(s.Secrets.RepoPassword), From: s.Secrets.RepoPasswordFrom, File: s.PasswordFile}
	if len(pw.Secret) == 0 {
		pw.Missing = fmt.Errorf("%w: the repository at %s is encrypted and sites.%s has no password: set sites.%s.password_file or %s",
			repo.ErrNoPassword, redact.URL(s.Repo), s.Name, s.Name, RepoPasswordEnv(s.Name))
	}
	return &service.Site{Name: s.Name, Repo: s.Repo, Password: pw, CacheDir: s.CacheDir, CompressionLevel: s.CompressionLevel}
}

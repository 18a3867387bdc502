package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/internal/service"
	"github.com/pgvault/pgvault/repo"
)

func repoKeyCommand() *cli.Command {
	newPassword := &cli.StringFlag{Name: "new-password-file", Usage: "read the new password from the first line of `FILE` (else it is asked twice at the terminal)"}
	return &cli.Command{
		Name:  "key",
		Usage: "manage the repository's passwords and write-only keys (nothing is re-encrypted)",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list the keys: ID, created, host, full or write-only, and which one this password opens",
				Action: func(c *cli.Context) error {
					return withEnv(c, runRepoKeyList)
				},
			},
			{
				Name:      "add",
				Usage:     "add a password; --write-only makes a credential for database hosts that stores backups and WAL but cannot read them back",
				ArgsUsage: " ",
				Flags: []cli.Flag{
					newPassword,
					&cli.BoolFlag{Name: "write-only", Usage: "the new key stores backups and WAL but cannot read any stored content"},
					&cli.StringFlag{Name: "credential-file", Usage: "with --write-only and no --new-password-file: write the generated credential to `FILE` (created, mode 0600) instead of printing it"},
				},
				Action: func(c *cli.Context) error {
					return withEnv(c, runRepoKeyAdd)
				},
			},
			{
				Name:      "remove",
				Usage:     "remove a key (not the one in use, nor the last full key)",
				ArgsUsage: "ID",
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return usagef("repo key remove takes one key ID (see `pgvault repo key list`)")
					}
					return withEnv(c, runRepoKeyRemove)
				},
			},
			{
				Name:  "passwd",
				Usage: "change the password of the key in use (a write-only key stays write-only)",
				Flags: []cli.Flag{newPassword},
				Action: func(c *cli.Context) error {
					return withEnv(c, runRepoKeyPasswd)
				},
			},
		},
	}
}

func withEnv(c *cli.Context, run func(ctx context.Context, e *env) error) error {
	e, err := newEnv(c)
	if err != nil {
		return err
	}
	return run(c.Context, e)
}

func keyKind(k repo.KeyInfo) string {
	if k.WriteOnly {
		return "write-only"
	}
	return "full"
}

func runRepoKeyList(ctx context.Context, e *env) error {
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	keys, err := site.Keys(ctx)
	if err != nil {
		return err
	}
	return e.out.emit(keys, func(w io.Writer) {
		fmt.Fprintf(w, "%-3s%-10s %-20s %-11s %s\n", "", "ID", "CREATED", "KIND", "HOST")
		for _, k := range keys {
			mark := ""
			if k.Current {
				mark = "*"
			}
			fmt.Fprintf(w, "%-3s%-10s %-20s %-11s %s\n", mark, service.ShortID(k.ID), k.Created.Local().Format(time.DateTime), keyKind(k), k.Hostname)
		}
	})
}

// newPassword reads the password a key command sets.
func (e *env) newPassword() ([]byte, error) {
	term, _ := e.stdin.(*os.File)
	return service.ReadNewPassword(e.c.String("new-password-file"), term, e.stderr)
}

func runRepoKeyAdd(ctx context.Context, e *env) error {
	writeOnly := e.c.Bool("write-only")
	credFile := e.c.String("credential-file")
	if credFile != "" && (!writeOnly || e.c.IsSet("new-password-file")) {
		return usagef("--credential-file is for the credential --write-only generates (without --new-password-file)")
	}
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	var password []byte
	if !writeOnly || e.c.IsSet("new-password-file") {
		if password, err = e.newPassword(); err != nil {
			return err
		}
	}
	var cred *os.File
	if credFile != "" {
		// Created before the key is, so that no credential is made that
		// cannot be kept.
		cred, err = os.OpenFile(credFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return usagef("--credential-file %s exists: give a new file (a credential is never written over another)", credFile)
		}
		if err != nil {
			return fmt.Errorf("credential file: %w", err)
		}
		defer cred.Close()
	}
	added, err := site.AddKey(ctx, password, writeOnly)
	if err != nil {
		if cred != nil {
			cred.Close()
			os.Remove(credFile)
		}
		return err
	}
	return e.reportAddedKey(added, cred)
}

func (e *env) reportAddedKey(added *service.AddedKey, cred *os.File) error {
	if cred != nil {
		if _, err := fmt.Fprintln(cred, added.Credential); err != nil {
			return fmt.Errorf("write the credential file (the key %s exists: remove it with `pgvault repo key remove`): %w", service.ShortID(added.ID), err)
		}
		if err := cred.Close(); err != nil {
			return fmt.Errorf("write the credential file (the key %s exists: remove it with `pgvault repo key remove`): %w", service.ShortID(added.ID), err)
		}
		added.Credential = ""
	}
	return e.out.emit(added, func(w io.Writer) {
		fmt.Fprintf(w, "added %s key %s\n", keyKind(added.KeyInfo), service.ShortID(added.ID))
		switch {
		case cred != nil:
			fmt.Fprintf(w, "credential written to %s: give it to the database hosts as their --password-file\n", cred.Name())
		case added.Credential != "":
			fmt.Fprintf(w, "credential (give it to the database hosts as their --password-file; it is not shown again):\n%s\n", added.Credential)
		}
	})
}

func runRepoKeyRemove(ctx context.Context, e *env) error {
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	k, err := site.RemoveKey(ctx, e.c.Args().First())
	if err != nil {
		return err
	}
	return e.out.emit(k, func(w io.Writer) {
		fmt.Fprintf(w, "removed %s key %s\n", keyKind(k), service.ShortID(k.ID))
	})
}

func runRepoKeyPasswd(ctx context.Context, e *env) error {
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	password, err := e.newPassword()
	if err != nil {
		return err
	}
	k, err := site.ChangePassword(ctx, password)
	if err != nil {
		return err
	}
	return e.out.emit(k, func(w io.Writer) {
		fmt.Fprintf(w, "password changed: %s key %s replaces the old one\n", keyKind(k), service.ShortID(k.ID))
	})
}

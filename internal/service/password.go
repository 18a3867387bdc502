package service

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/term"

	"github.com/pgvault/pgvault/repo"
)

// PasswordEnv is the environment variable that may hold the repository
// password.
const PasswordEnv = "PGVAULT_PASSWORD"

// Password is a repository password and where it came from.
type Password struct {
	// Secret is the password; empty when there is none.
	Secret []byte
	// From says where it came from, for messages: an environment
	// variable's name, a file's path or "prompt".
	From string
	// File is the absolute path of the password file named for this site,
	// even when the environment's password won: restore_command names the
	// file, never the password itself.
	File string
	// Missing, when there is no password, says why: where to give one
	// (matching repo.ErrNoPassword; Open returns it when the repository
	// turns out to be encrypted), or why the password file could not be
	// read (Open returns it at once).
	Missing error
}

// PasswordSource says where ReadPassword may look, in its order.
type PasswordSource struct {
	// Env is the value of PGVAULT_PASSWORD ("" when unset).
	Env string
	// File is a file whose first line is the password.
	File string
	// Terminal, when it is a terminal, is where to prompt (echo off),
	// writing the prompt to Prompt.
	Terminal *os.File
	Prompt   io.Writer
	// Confirm asks twice (repo init).
	Confirm bool
}

// ReadPassword finds the repository password: the environment, then the
// file, then a prompt on a terminal. It is never a flag, so it cannot
// show up in ps. No password anywhere is not an error: the Password's
// Missing says how to give one, for when the repository needs it.
func ReadPassword(src PasswordSource) (Password, error) {
	var pw Password
	if src.File != "" {
		abs, err := filepath.Abs(src.File)
		if err != nil {
			return pw, fmt.Errorf("password file %s: %w", src.File, err)
		}
		pw.File = abs
	}
	switch {
	case src.Env != "":
		pw.Secret, pw.From = []byte(src.Env), PasswordEnv
	case pw.File != "":
		// A file that cannot be read fails the command only when it needs
		// the password: restore_command serves a prefetched segment from
		// the spool without one.
		line, err := ReadSecretFile(pw.File)
		if err != nil {
			pw.Missing = err
			return pw, nil
		}
		pw.Secret, pw.From = []byte(line), pw.File
	case src.Terminal != nil && term.IsTerminal(int(src.Terminal.Fd())):
		secret, err := prompt(src.Terminal, src.Prompt, "repository password: ")
		if err != nil {
			return pw, err
		}
		if src.Confirm {
			again, err := prompt(src.Terminal, src.Prompt, "repeat password: ")
			if err != nil {
				return pw, err
			}
			if string(again) != string(secret) {
				return pw, errors.New("the passwords do not match")
			}
		}
		if len(secret) == 0 {
			return pw, repo.ErrNoPassword
		}
		pw.Secret, pw.From = secret, "prompt"
	default:
		pw.Missing = fmt.Errorf("%w: use --password-file FILE or set %s", repo.ErrNoPassword, PasswordEnv)
	}
	return pw, nil
}

// ReadSecretFile returns the first line of a secret file (a password).
func ReadSecretFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read password file: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return "", fmt.Errorf("password file %s is empty: write the password on its first line", path)
	}
	return line, nil
}

func prompt(f *os.File, w io.Writer, label string) ([]byte, error) {
	if w == nil {
		w = io.Discard
	}
	fmt.Fprint(w, label)
	pw, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(w)
	if err != nil {
		return nil, fmt.Errorf("read password: %w", err)
	}
	return pw, nil
}

// ReadNewPassword reads a password to set (repo key add, passwd): the
// first line of file, else asked twice at terminal. Without either it is
// repo.ErrNoPassword, with how to give one.
func ReadNewPassword(file string, terminal *os.File, w io.Writer) ([]byte, error) {
	if file != "" {
		line, err := ReadSecretFile(file)
		if err != nil {
			return nil, err
		}
		return []byte(line), nil
	}
	if terminal == nil || !term.IsTerminal(int(terminal.Fd())) {
		return nil, fmt.Errorf("%w: give the new password with --new-password-file FILE", repo.ErrNoPassword)
	}
	secret, err := prompt(terminal, w, "new password: ")
	if err != nil {
		return nil, err
	}
	again, err := prompt(terminal, w, "repeat new password: ")
	if err != nil {
		return nil, err
	}
	if string(again) != string(secret) {
		return nil, errors.New("the passwords do not match")
	}
	if len(secret) == 0 {
		return nil, repo.ErrNoPassword
	}
	return secret, nil
}

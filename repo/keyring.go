package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/backend"
)

// Sentinel errors of key management.
var (
	// ErrWriteOnly: the repository was opened with a write-only key and
	// the operation reads file or WAL contents, or manages keys.
	ErrWriteOnly = chunk.ErrWriteOnly
	// ErrNoWriteOnlyKeys: a format-1 repository seals contents with the
	// key every password opens, so a write-only key would read them.
	ErrNoWriteOnlyKeys = errors.New("this repository was created before write-only keys (format version 1): its file and WAL contents are sealed with the key a write-only key would hold; create a new repository with `pgvault repo init` to use them")
	// ErrKeyInUse: removing the key the command was opened with.
	ErrKeyInUse = errors.New("that is the key this command opened the repository with: remove it with another password, or change it with `pgvault repo key passwd`")
	// ErrLastFullKey: removing the only key that can restore.
	ErrLastFullKey = errors.New("that is the last key that can read the repository: without it no backup could be restored")
	// ErrKeyNotFound: no key file has the given ID (prefix).
	ErrKeyNotFound = errors.New("no such key")
	// ErrUnencrypted: an unencrypted repository has no passwords.
	ErrUnencrypted = errors.New("the repository is not encrypted: it has no passwords to manage")
)

// KeyInfo describes one key file (one password).
type KeyInfo struct {
	ID        string    `json:"id"`
	Created   time.Time `json:"created"`
	Hostname  string    `json:"hostname"`
	WriteOnly bool      `json:"write_only"`
	// Current is the key this command opened the repository with.
	Current bool `json:"current"`
}

func (r *Repository) keyInfo(name string, kf *keyFile) KeyInfo {
	return KeyInfo{ID: name, Created: kf.Created, Hostname: kf.Hostname, WriteOnly: kf.WriteOnly, Current: name == r.keyName}
}

// loadKeyFiles reads every key file, by name.
func (r *Repository) loadKeyFiles(ctx context.Context) (map[string]*keyFile, error) {
	var names []string
	err := r.be.List(ctx, backend.KeyFile, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	files := make(map[string]*keyFile, len(names))
	for _, name := range names {
		data, err := r.be.Load(ctx, backend.Handle{Type: backend.KeyFile, Name: name}, 0, 0)
		if err != nil {
			return nil, fmt.Errorf("load key %s: %w", short(name), err)
		}
		kf, err := ParseKeyFile(data)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", short(name), err)
		}
		files[name] = kf
	}
	return files, nil
}

// Keys lists the repository's keys, oldest first.
func (r *Repository) Keys(ctx context.Context) ([]KeyInfo, error) {
	files, err := r.loadKeyFiles(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]KeyInfo, 0, len(files))
	for name, kf := range files {
		out = append(out, r.keyInfo(name, kf))
	}
	slices.SortFunc(out, func(a, b KeyInfo) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// currentKeyFile is the key file the repository was opened with.
func (r *Repository) currentKeyFile(ctx context.Context) (*keyFile, error) {
	data, err := r.be.Load(ctx, backend.Handle{Type: backend.KeyFile, Name: r.keyName}, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("load key %s: %w", short(r.keyName), err)
	}
	return ParseKeyFile(data)
}

// AddKey stores a new key file that password opens: a full key, or with
// writeOnly one that can store backups and WAL but not read their
// contents. Nothing is re-encrypted. It needs a full key.
func (r *Repository) AddKey(ctx context.Context, password []byte, writeOnly bool) (KeyInfo, error) {
	if !r.cfg.Encrypted() {
		return KeyInfo{}, ErrUnencrypted
	}
	if r.WriteOnly() {
		return KeyInfo{}, fmt.Errorf("adding a key needs a full key: %w", ErrWriteOnly)
	}
	if writeOnly && !r.cfg.SealsToPublicKey() {
		return KeyInfo{}, ErrNoWriteOnlyKeys
	}
	if len(password) == 0 {
		return KeyInfo{}, ErrNoPassword
	}
	cur, err := r.currentKeyFile(ctx)
	if err != nil {
		return KeyInfo{}, err
	}
	master := r.master
	if writeOnly {
		master = master.writeOnly()
	}
	return r.saveKeyFile(ctx, master, password, cur.Params, writeOnly)
}

func (r *Repository) saveKeyFile(ctx context.Context, master *masterKey, password []byte, p KDFParams, writeOnly bool) (KeyInfo, error) {
	kf, kek, err := wrapKey(master, password, true, p)
	if err != nil {
		return KeyInfo{}, err
	}
	kf.WriteOnly = writeOnly
	name, err := saveKey(ctx, r.be, kf)
	if err != nil {
		return KeyInfo{}, err
	}
	if r.opts.KeyCache != nil {
		r.opts.KeyCache.Put(r.cfg.ID, name, kek)
	}
	return r.keyInfo(name, kf), nil
}

// findKeyName resolves an ID or a unique prefix of one.
func findKeyName(files map[string]*keyFile, id string) (string, error) {
	var match []string
	for name := range files {
		if id != "" && strings.HasPrefix(name, strings.ToLower(id)) {
			match = append(match, name)
		}
	}
	switch len(match) {
	case 0:
		return "", fmt.Errorf("%w: %q", ErrKeyNotFound, id)
	case 1:
		return match[0], nil
	}
	return "", fmt.Errorf("key ID %q is ambiguous: it starts %d keys", id, len(match))
}

// RemoveKey deletes the key file id names (a unique prefix will do). It
// refuses the key in use and the last full key, and needs a full key.
func (r *Repository) RemoveKey(ctx context.Context, id string) (KeyInfo, error) {
	if !r.cfg.Encrypted() {
		return KeyInfo{}, ErrUnencrypted
	}
	if r.WriteOnly() {
		return KeyInfo{}, fmt.Errorf("removing a key needs a full key: %w", ErrWriteOnly)
	}
	files, err := r.loadKeyFiles(ctx)
	if err != nil {
		return KeyInfo{}, err
	}
	name, err := findKeyName(files, id)
	if err != nil {
		return KeyInfo{}, err
	}
	if name == r.keyName {
		return KeyInfo{}, ErrKeyInUse
	}
	kf := files[name]
	if !kf.WriteOnly {
		full := 0
		for _, f := range files {
			if !f.WriteOnly {
				full++
			}
		}
		if full <= 1 {
			return KeyInfo{}, ErrLastFullKey
		}
	}
	if err := r.be.Remove(ctx, backend.Handle{Type: backend.KeyFile, Name: name}); err != nil {
		return KeyInfo{}, fmt.Errorf("remove key %s: %w", short(name), err)
	}
	return r.keyInfo(name, kf), nil
}

// ChangePassword replaces the key the repository was opened with by one
// that password opens, of the same kind (full or write-only). The new key
// is stored before the old one is removed, so a failure between the two
// leaves both.
func (r *Repository) ChangePassword(ctx context.Context, password []byte) (KeyInfo, error) {
	if !r.cfg.Encrypted() {
		return KeyInfo{}, ErrUnencrypted
	}
	if len(password) == 0 {
		return KeyInfo{}, ErrNoPassword
	}
	cur, err := r.currentKeyFile(ctx)
	if err != nil {
		return KeyInfo{}, err
	}
	info, err := r.saveKeyFile(ctx, r.master, password, cur.Params, r.WriteOnly())
	if err != nil {
		return KeyInfo{}, err
	}
	if err := r.be.Remove(ctx, backend.Handle{Type: backend.KeyFile, Name: r.keyName}); err != nil {
		return info, fmt.Errorf("the new password works, but the old key %s could not be removed (remove it with `pgvault repo key remove`): %w", short(r.keyName), err)
	}
	r.keyName = info.ID
	info.Current = true
	return info, nil
}

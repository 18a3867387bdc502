package service

import (
	"context"
	"crypto/rand"
	"encoding/base64"

	"github.com/pgvault/pgvault/repo"
)

// Keys lists the repository's keys (one per password).
func (s *Site) Keys(ctx context.Context) ([]repo.KeyInfo, error) {
	r, err := s.Open(ctx, Access{SkipIndex: true})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Keys(ctx)
}

// AddedKey is what AddKey stored; Credential is the generated password of
// a write-only key when none was given.
type AddedKey struct {
	repo.KeyInfo
	Credential string `json:"credential,omitempty"`
}

// AddKey adds a key that password opens. A write-only key without a
// password gets a generated one (32 random bytes, base64url), returned
// once in Credential: it goes to the database hosts, never to a log.
func (s *Site) AddKey(ctx context.Context, password []byte, writeOnly bool) (*AddedKey, error) {
	r, err := s.Open(ctx, Access{SkipIndex: true})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var generated string
	if len(password) == 0 && writeOnly {
		b := make([]byte, 32)
		rand.Read(b)
		generated = base64.RawURLEncoding.EncodeToString(b)
		password = []byte(generated)
	}
	info, err := r.AddKey(ctx, password, writeOnly)
	if err != nil {
		return nil, err
	}
	return &AddedKey{KeyInfo: info, Credential: generated}, nil
}

// RemoveKey removes the key id names (a unique prefix will do).
func (s *Site) RemoveKey(ctx context.Context, id string) (repo.KeyInfo, error) {
	r, err := s.Open(ctx, Access{SkipIndex: true})
	if err != nil {
		return repo.KeyInfo{}, err
	}
	defer r.Close()
	return r.RemoveKey(ctx, id)
}

// ChangePassword replaces the key the site's password opens by one that
// password opens. Nothing is re-encrypted.
func (s *Site) ChangePassword(ctx context.Context, password []byte) (repo.KeyInfo, error) {
	r, err := s.Open(ctx, Access{SkipIndex: true})
	if err != nil {
		return repo.KeyInfo{}, err
	}
	defer r.Close()
	return r.ChangePassword(ctx, password)
}

package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/repo"
)

type repoInitOptions struct {
	noEncryption bool
	chunkSize    int
}

func repoInitCommand() *cli.Command {
	var o repoInitOptions
	return &cli.Command{
		Name:  "init",
		Usage: "create a new repository at --repo",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "insecure-no-encryption", Destination: &o.noEncryption,
				Usage: "store data unencrypted (integrity is still checked); anyone with access to the storage can read your database"},
			&cli.IntFlag{Name: "chunk-size", Destination: &o.chunkSize, Value: 0,
				Usage: "fixed chunk `BYTES` for relation files (multiple of 8192; default 131072)"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			return runRepoInit(c.Context, e, o)
		},
	}
}

type repoInitResult struct {
	ID         string `json:"id"`
	Location   string `json:"location"`
	Encryption string `json:"encryption"`
	ChunkSize  int    `json:"chunk_size"`
}

func runRepoInit(ctx context.Context, e *env, o repoInitOptions) error {
	be, err := e.openBackend(ctx, true)
	if err != nil {
		return err
	}
	defer be.Close()
	var pw []byte
	if !o.noEncryption {
		if pw, err = e.password(true); err != nil {
			return err
		}
	}
	cfg, err := repo.Init(ctx, be, repo.InitOptions{Password: pw, NoEncryption: o.noEncryption, ChunkSize: o.chunkSize, KeyCache: e.keyCache()})
	if err != nil {
		return err
	}
	res := repoInitResult{ID: cfg.ID, Location: be.Location(), Encryption: cfg.Encryption, ChunkSize: cfg.ChunkSize}
	return e.out.emit(res, func(w io.Writer) {
		fmt.Fprintf(w, "created repository %s at %s (encryption: %s)\n", cfg.ID[:8], be.Location(), cfg.Encryption)
		if cfg.Encrypted() {
			fmt.Fprintln(w, "keep the password safe: without it the backups cannot be read")
		}
	})
}

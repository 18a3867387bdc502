package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/internal/service"
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

func runRepoInit(ctx context.Context, e *env, o repoInitOptions) error {
	need := confirmPassword
	if o.noEncryption {
		need = noPassword
	}
	site, err := e.site(need)
	if err != nil {
		return err
	}
	rep, err := site.Init(ctx, service.InitOptions{NoEncryption: o.noEncryption, ChunkSize: o.chunkSize})
	if err != nil {
		return err
	}
	return e.out.emit(rep, func(w io.Writer) {
		fmt.Fprintf(w, "created repository %s at %s (encryption: %s)\n", service.ShortID(rep.ID), rep.Location, rep.Encryption)
		if rep.Encryption != "none" {
			fmt.Fprintln(w, "keep the password safe: without it the backups cannot be read")
		}
	})
}

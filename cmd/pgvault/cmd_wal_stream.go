package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pgvault/pgvault/internal/service"
	"github.com/pgvault/pgvault/stream"
)

type walStreamOptions struct {
	nodes           []string
	slot            string
	synchronous     bool
	flushInterval   time.Duration
	statusInterval  time.Duration
	applicationName string
}

func walStreamCommand() *cli.Command {
	var o walStreamOptions
	var nodes cli.StringSlice
	return &cli.Command{
		Name:  "stream",
		Usage: "stream WAL into the repository over a physical replication slot (runs until stopped)",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "pg", Aliases: []string{"node"}, Destination: &nodes,
				Usage: "PostgreSQL `CONNINFO` to stream from; repeat for failover nodes, tried in order (default: the global --pg)"},
			&cli.StringFlag{Name: "slot", Destination: &o.slot, Value: "pgvault", Usage: "physical replication slot `NAME` (created if missing)"},
			&cli.BoolFlag{Name: "synchronous", Destination: &o.synchronous,
				Usage: "store every WAL batch at once and confirm it only when stored; with this streamer's application_name in synchronous_standby_names, commits wait until their WAL is in the repository"},
			&cli.DurationFlag{Name: "flush-interval", Destination: &o.flushInterval, Value: time.Second,
				Usage: "store the open partial segment at least this often"},
			&cli.DurationFlag{Name: "status-interval", Destination: &o.statusInterval, Value: 10 * time.Second,
				Usage: "send a standby status update at least this often"},
			&cli.StringFlag{Name: "application-name", Destination: &o.applicationName, Value: "pgvault",
				Usage: "application_name the streamer connects with (the name to put in synchronous_standby_names)"},
		},
		Action: func(c *cli.Context) error {
			e, err := newEnv(c)
			if err != nil {
				return err
			}
			o.nodes = nodes.Value()
			if len(o.nodes) == 0 {
				// The global --pg (or PGVAULT_PG): the parent's lookup walks up
				// to the app's flags. (The outermost context of the lineage
				// has no flags: it read "" and ignored the global --pg.)
				o.nodes = []string{c.Lineage()[1].String("pg")}
			}
			return runWalStream(c.Context, e, o)
		},
	}
}

type walStreamReport struct {
	Timeline uint32 `json:"timeline"`
	Flushed  string `json:"flushed_lsn"`
	Received string `json:"received_lsn"`
}

func runWalStream(ctx context.Context, e *env, o walStreamOptions) error {
	site, err := e.site(askPassword)
	if err != nil {
		return err
	}
	var nodes []stream.Node
	for _, conninfo := range o.nodes {
		n, err := service.StreamNode(conninfo, o.applicationName)
		if err != nil {
			return fmt.Errorf("--pg: %w", err)
		}
		nodes = append(nodes, n)
	}
	var last stream.Status
	err = site.StreamWAL(ctx, nodes, service.StreamOptions{StreamOptions: stream.StreamOptions{
		Slot: o.slot, Synchronous: o.synchronous, FlushInterval: o.flushInterval, StatusInterval: o.statusInterval,
		OnStatus: func(s stream.Status) { last = s },
	}})
	if err != nil {
		return err
	}
	rep := walStreamReport{Timeline: last.Timeline, Flushed: last.Flushed.String(), Received: last.Received.String()}
	return e.out.emit(rep, func(w io.Writer) {
		fmt.Fprintf(w, "WAL streaming stopped: stored up to %s on timeline %d\n", last.Flushed, last.Timeline)
	})
}

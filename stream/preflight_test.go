package stream

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestExplainReplicationError(t *testing.T) {
	cfg := &pgconn.Config{Host: "db1", Port: 5432, User: "bob"}
	tests := []struct {
		name     string
		err      error
		msg, fix string
	}{
		{"pg_hba", &pgconn.PgError{Code: "28000", Message: `no pg_hba.conf entry for replication connection from host "10.0.0.5", user "bob", no encryption`},
			"pg_hba.conf refuses", "host replication bob"},
		{"password", &pgconn.PgError{Code: "28P01", Message: `password authentication failed for user "bob"`},
			"password was rejected", "PGPASSWORD"},
		{"no REPLICATION", &pgconn.PgError{Code: "42501", Message: "must be superuser or replication role to start walsender"},
			"may not start replication", `ALTER ROLE "bob" REPLICATION`},
		{"senders exhausted", &pgconn.PgError{Code: "53300", Message: "number of requested standby connections exceeds max_wal_senders (currently 1)"},
			"no free WAL sender", "max_wal_senders"},
		{"connections exhausted", &pgconn.PgError{Code: "53300", Message: "sorry, too many clients already"},
			"no free connection slot", "max_connections"},
		{"other server error", &pgconn.PgError{Code: "XX000", Message: "boom"}, "boom (SQLSTATE XX000)", "server log"},
		{"refused", fmt.Errorf("dial: %w", syscall.ECONNREFUSED), "connection refused", "listen_addresses"},
		{"timeout", fmt.Errorf("dial: %w", context.DeadlineExceeded), "timed out", "firewalls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, fix := explainReplicationError(tt.err, cfg)
			if !strings.Contains(msg, tt.msg) || !strings.Contains(fix, tt.fix) {
				t.Fatalf("got %q / %q, want %q / %q", msg, fix, tt.msg, tt.fix)
			}
		})
	}
}

func TestPreflightReportAdd(t *testing.T) {
	r := &PreflightReport{Ready: true}
	r.Add(Finding{Setting: "a", Status: FindingOK})
	r.Add(Finding{Setting: "b", Status: FindingWarning})
	if !r.Ready || len(r.Errors()) != 0 {
		t.Fatalf("warnings made it not ready: %+v", r)
	}
	r.Add(Finding{Setting: "c", Status: FindingError})
	r.Add(Finding{Setting: "d", Status: FindingOK})
	if r.Ready || len(r.Errors()) != 1 || r.Errors()[0].Setting != "c" {
		t.Fatalf("report %+v", r)
	}
}

func TestProbeReplicationUnreachable(t *testing.T) {
	cfg, err := pgconn.ParseConfig("host=127.0.0.1 port=1 user=postgres connect_timeout=5")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, sys := ProbeReplication(ctx, cfg)
	if f.Status != FindingError || sys != nil || f.Setting != "replication_connection" || f.Fix == "" {
		t.Fatalf("finding %+v", f)
	}
	if _, ok := cfg.RuntimeParams["replication"]; ok {
		t.Fatal("the caller's config was changed")
	}
}

package stream

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pglogrepl"
	"github.com/pgvault/pgvault/internal/pg"
)

// The streamer's physical replication slot: read it, create it when
// missing, and refuse one PostgreSQL invalidated.

// slotState is what READ_REPLICATION_SLOT says.
type slotState struct {
	exists      bool
	invalidated bool
	restartLSN  pglogrepl.LSN
	restartTLI  uint32
}

func (s *session) readSlot(ctx context.Context) (slotState, error) {
	rows, err := s.conn.Exec(ctx, "READ_REPLICATION_SLOT "+pg.QuoteIdent(s.opts.Slot)).ReadAll()
	if err != nil {
		return slotState{}, fmt.Errorf("READ_REPLICATION_SLOT %s: %w", s.opts.Slot, err)
	}
	if len(rows) != 1 || len(rows[0].Rows) != 1 || len(rows[0].Rows[0]) != 3 {
		return slotState{}, errors.New("READ_REPLICATION_SLOT: unexpected result")
	}
	row := rows[0].Rows[0]
	if row[0] == nil {
		return slotState{}, nil
	}
	if string(row[0]) != "physical" {
		return slotState{}, fmt.Errorf("replication slot %q is a %s slot; pgvault needs a physical one (choose another name with --slot)", s.opts.Slot, row[0])
	}
	st := slotState{exists: true}
	if row[1] == nil {
		st.invalidated = true
		return st, nil
	}
	if st.restartLSN, err = pglogrepl.ParseLSN(string(row[1])); err != nil {
		return slotState{}, err
	}
	tli, err := strconv.ParseUint(string(row[2]), 10, 32)
	if err != nil {
		return slotState{}, err
	}
	st.restartTLI = uint32(tli)
	return st, nil
}

// ensureSlot creates the physical slot (reserving WAL at once) if missing.
func (s *session) ensureSlot(ctx context.Context) (slotState, error) {
	st, err := s.readSlot(ctx)
	if err != nil {
		return st, err
	}
	if st.invalidated {
		return st, fmt.Errorf("%w: PostgreSQL removed WAL that slot %q held (max_slot_wal_keep_size?), so WAL is missing from the archive: drop it with SELECT pg_drop_replication_slot('%s'), restart `pgvault wal stream` (it creates the slot again) and take a new base backup",
			ErrSlotInvalidated, s.opts.Slot, s.opts.Slot)
	}
	if st.exists {
		return st, nil
	}
	// pglogrepl's helper has no RESERVE_WAL for physical slots, so the
	// replication command is sent as is.
	if _, err := s.conn.Exec(ctx, "CREATE_REPLICATION_SLOT "+pg.QuoteIdent(s.opts.Slot)+" PHYSICAL RESERVE_WAL").ReadAll(); err != nil {
		return st, fmt.Errorf("create replication slot %q: %w", s.opts.Slot, err)
	}
	s.log.Info("created physical replication slot", "slot", s.opts.Slot)
	return s.readSlot(ctx)
}

package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// Node is one PostgreSQL server the streamer may take WAL from.
type Node struct {
	// Name identifies the node in logs and status, without secrets.
	Name string
	// Connect opens a physical replication connection (replication=true).
	Connect func(ctx context.Context) (*pgconn.PgConn, error)
}

// StreamOptions configure Run.
type StreamOptions struct {
	// Slot is the physical replication slot; created if missing.
	Slot string
	// FlushInterval bounds how long received WAL waits before the open
	// partial segment is written to the repository (default 1 s).
	FlushInterval time.Duration
	// StatusInterval is how often a standby status update is sent even when
	// nothing changes (default 10 s; PostgreSQL's wal_sender_timeout is 60 s).
	StatusInterval time.Duration
	// Synchronous writes every WAL batch to the repository at once, so a
	// synchronous primary's commits wait until their WAL is stored.
	Synchronous bool
	// RetryMin and RetryMax bound the reconnect backoff (default 1 s, 30 s).
	RetryMin, RetryMax time.Duration
	Logger             *slog.Logger
	// OnStatus, if set, is called whenever the streamer's position changes.
	OnStatus func(Status)
}

func (o *StreamOptions) fill() {
	if o.Slot == "" {
		o.Slot = "pgvault"
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = time.Second
	}
	if o.StatusInterval <= 0 {
		o.StatusInterval = 10 * time.Second
	}
	if o.RetryMin <= 0 {
		o.RetryMin = time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Status is the streamer's position.
type Status struct {
	Node      string
	Connected bool
	Timeline  uint32
	Received  pglogrepl.LSN // written into the in-memory segment
	Flushed   pglogrepl.LSN // durable in the repository, reported to the server
	ServerEnd pglogrepl.LSN // the server's newest WAL, as it last said
	LastFlush time.Time     // when WAL last became durable
}

// LagBytes is how much of the server's WAL is not yet in the repository.
func (s Status) LagBytes() int64 {
	if s.ServerEnd <= s.Flushed {
		return 0
	}
	return int64(s.ServerEnd - s.Flushed)
}

// Errors that end Run because reconnecting cannot fix them.
var (
	// ErrSlotInvalidated: PostgreSQL removed WAL the slot was holding.
	ErrSlotInvalidated = errors.New("replication slot was invalidated")
	// ErrTimelineConflict: the server's timeline history does not contain
	// the repository's newest timeline.
	ErrTimelineConflict = errors.New("timeline conflict between server and repository")
)

// Run streams WAL from the first node that works into the repository
// until ctx ends; it then writes what it has received and returns nil.
// Connection failures are retried with backoff, moving on to the next
// node each time. Errors that retrying cannot fix are returned.
//
// Nothing acknowledged is lost: the flush position reported to PostgreSQL
// (which lets the slot release WAL) is only ever the end of WAL that is
// durable in the repository.
func Run(ctx context.Context, r *repo.Repository, nodes []Node, opts StreamOptions) error {
	opts.fill()
	if len(nodes) == 0 {
		return errors.New("wal stream: no PostgreSQL node given")
	}
	backoff := opts.RetryMin
	for i := 0; ; i++ {
		node := nodes[i%len(nodes)]
		s := &session{r: r, node: node, opts: opts, log: opts.Logger.With("node", node.Name)}
		streamed, err := s.run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil || errors.Is(err, errEndOfTimeline) {
			backoff = opts.RetryMin
			i-- // same node, at once: it moved to a new timeline
			continue
		}
		if permanent(err) {
			return err
		}
		if streamed {
			backoff = opts.RetryMin
		}
		s.log.Warn("WAL streaming interrupted; reconnecting", "err", err, "retry_in", backoff.String())
		if opts.OnStatus != nil {
			opts.OnStatus(Status{Node: node.Name, Connected: false})
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, opts.RetryMax)
	}
}

// permanent reports errors that reconnecting will not fix.
func permanent(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01", "28000", "42501": // bad password, pg_hba, no REPLICATION
			return true
		}
	}
	return errors.Is(err, ErrSlotInvalidated) || errors.Is(err, ErrTimelineConflict) || errors.Is(err, repo.ErrWALConflict) ||
		errors.Is(err, pg.ErrUnsupportedServer)
}

var errEndOfTimeline = errors.New("end of timeline")

// session is one connection's worth of streaming.
type session struct {
	r    *repo.Repository
	node Node
	opts StreamOptions
	log  *slog.Logger

	conn    *pgconn.PgConn
	segSize uint64
}

// run streams until the connection fails, the timeline ends, or ctx ends.
// streamed reports whether any WAL became durable (to reset the backoff).
func (s *session) run(ctx context.Context) (streamed bool, err error) {
	conn, err := s.node.Connect(ctx)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	s.conn = conn
	defer conn.Close(context.WithoutCancel(ctx))
	// A newer major may change the WAL page format: refuse it rather than
	// archive WAL this pgvault cannot check or serve.
	if err := pg.CheckMajor(conn.ParameterStatus("server_version"), pg.OldestStreamMajor, "WAL streaming"); err != nil {
		return false, err
	}

	ident, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return false, fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}
	serverTLI := uint32(ident.Timeline)
	if s.segSize, err = s.walSegmentSize(ctx); err != nil {
		return false, err
	}
	slot, err := s.ensureSlot(ctx)
	if err != nil {
		return false, err
	}
	pos, err := FindRepoPosition(ctx, s.r, s.segSize)
	if err != nil {
		return false, err
	}
	tli, start, err := s.startPoint(ctx, serverTLI, pos, slot)
	if err != nil {
		return false, err
	}
	if err := s.startReplication(ctx, tli, start); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "58P01" || slot.restartLSN <= start {
			return false, err
		}
		// The server no longer has WAL the repository lacks: a gap that
		// only a new base backup closes. Say so, and protect what follows.
		gapEnd := wal.SegmentStart(slot.restartLSN, s.segSize)
		s.log.Error("WAL was removed from the server before pgvault stored it: the archive has a gap; take a new base backup",
			"timeline", tli, "from", start.String(), "to", gapEnd.String(), "server", pgErr.Message)
		start = gapEnd
		if err := s.startReplication(ctx, tli, start); err != nil {
			return false, err
		}
	}
	s.log.Info("streaming WAL", "timeline", tli, "start", start.String(), "slot", s.opts.Slot, "synchronous", s.opts.Synchronous)
	return s.stream(ctx, tli, start)
}

// walSegmentSize asks the server (SHOW works on a replication connection).
func (s *session) walSegmentSize(ctx context.Context) (uint64, error) {
	v, err := pg.Show(ctx, s.conn, "wal_segment_size")
	if err != nil {
		return 0, err
	}
	size, err := wal.ParseMemorySize(v)
	if err != nil || !wal.ValidSegmentSize(size) {
		return 0, fmt.Errorf("wal_segment_size %q is not a valid WAL segment size", v)
	}
	return size, nil
}

// startPoint decides where to stream from: the start of the segment the
// repository's WAL ends in, following the server's timeline history when
// the repository is on an older timeline.
func (s *session) startPoint(ctx context.Context, serverTLI uint32, pos RepoPosition, slot slotState) (uint32, pglogrepl.LSN, error) {
	if pos.LSN == 0 {
		if serverTLI > 1 {
			if err := s.storeHistory(ctx, serverTLI); err != nil {
				return 0, 0, err
			}
		}
		return serverTLI, wal.SegmentStart(slot.restartLSN, s.segSize), nil
	}
	switch {
	case pos.Timeline == serverTLI:
		return serverTLI, wal.SegmentStart(pos.LSN, s.segSize), nil
	case pos.Timeline > serverTLI:
		return 0, 0, fmt.Errorf("%w: the repository holds WAL of timeline %d but %s is on timeline %d; is --pg pointing at the right cluster?",
			ErrTimelineConflict, pos.Timeline, s.node.Name, serverTLI)
	}
	history, err := s.storeHistories(ctx, serverTLI)
	if err != nil {
		return 0, 0, err
	}
	for i, h := range history {
		if h.Timeline != pos.Timeline {
			continue
		}
		if pos.LSN < h.SwitchLSN {
			return pos.Timeline, wal.SegmentStart(pos.LSN, s.segSize), nil
		}
		next := serverTLI
		if i+1 < len(history) {
			next = history[i+1].Timeline
		}
		return next, wal.SegmentStart(h.SwitchLSN, s.segSize), nil
	}
	return 0, 0, fmt.Errorf("%w: timeline %d of the repository is not in the history of the server's timeline %d", ErrTimelineConflict, pos.Timeline, serverTLI)
}

// storeHistories stores the history file of tli and of every ancestor
// timeline above 1, and returns tli's parsed history.
func (s *session) storeHistories(ctx context.Context, tli uint32) ([]wal.HistoryEntry, error) {
	data, err := s.fetchHistory(ctx, tli)
	if err != nil {
		return nil, err
	}
	history, err := wal.ParseHistory(data)
	if err != nil {
		return nil, fmt.Errorf("timeline %d history from the server: %w", tli, err)
	}
	if err := s.saveHistory(ctx, tli, data); err != nil {
		return nil, err
	}
	for _, h := range history {
		if h.Timeline > 1 {
			if err := s.storeHistory(ctx, h.Timeline); err != nil {
				return nil, err
			}
		}
	}
	return history, nil
}

func (s *session) storeHistory(ctx context.Context, tli uint32) error {
	data, err := s.fetchHistory(ctx, tli)
	if err != nil {
		return err
	}
	return s.saveHistory(ctx, tli, data)
}

func (s *session) fetchHistory(ctx context.Context, tli uint32) ([]byte, error) {
	res, err := pglogrepl.TimelineHistory(ctx, s.conn, int32(tli))
	if err != nil {
		return nil, fmt.Errorf("TIMELINE_HISTORY %d: %w", tli, err)
	}
	return res.Content, nil
}

func (s *session) saveHistory(ctx context.Context, tli uint32, data []byte) error {
	if _, err := s.r.SaveWAL(ctx, tli, wal.HistoryFileName(tli), data, false); err != nil {
		return fmt.Errorf("store timeline %d history: %w", tli, err)
	}
	return nil
}

// startReplication sends START_REPLICATION and waits for the COPY to begin.
func (s *session) startReplication(ctx context.Context, tli uint32, start pglogrepl.LSN) error {
	q := fmt.Sprintf("START_REPLICATION SLOT %s PHYSICAL %s TIMELINE %d", pg.QuoteIdent(s.opts.Slot), start, tli)
	s.conn.Frontend().SendQuery(&pgproto3.Query{String: q})
	if err := s.conn.Frontend().Flush(); err != nil {
		return fmt.Errorf("send START_REPLICATION: %w", err)
	}
	var startErr error
	for {
		msg, err := s.conn.ReceiveMessage(ctx)
		if err != nil {
			return fmt.Errorf("START_REPLICATION: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyBothResponse:
			return nil
		case *pgproto3.ErrorResponse:
			startErr = pgconn.ErrorResponseToPgError(m)
		case *pgproto3.ReadyForQuery:
			if startErr == nil {
				startErr = errors.New("START_REPLICATION ended without streaming")
			}
			return startErr
		case *pgproto3.NoticeResponse:
		default:
			return fmt.Errorf("START_REPLICATION: unexpected %T", msg)
		}
	}
}

// event is one message from the server, copied out of pgconn's buffers.
type event struct {
	xlog      *pglogrepl.XLogData
	keepalive *pglogrepl.PrimaryKeepaliveMessage
	copyDone  bool
	err       error
}

// read forwards server messages until the connection fails. It is the
// only reader of the connection; the stream loop is the only writer, so
// status updates never wait behind a blocked read.
func (s *session) read(out chan<- event, stop <-chan struct{}) {
	send := func(ev event) bool {
		select {
		case out <- ev:
			return true
		case <-stop:
			return false
		}
	}
	for {
		// No deadline: a context here would make pgconn set deadlines on
		// the socket, which would also break the writer's sends.
		msg, err := s.conn.ReceiveMessage(context.Background())
		if err != nil {
			send(event{err: err})
			return
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					send(event{err: fmt.Errorf("parse XLogData: %w", err)})
					return
				}
				x.WALData = append([]byte(nil), x.WALData...)
				if !send(event{xlog: &x}) {
					return
				}
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				k, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					send(event{err: fmt.Errorf("parse keepalive: %w", err)})
					return
				}
				if !send(event{keepalive: &k}) {
					return
				}
			}
		case *pgproto3.CopyDone:
			send(event{copyDone: true})
			return
		case *pgproto3.ErrorResponse:
			send(event{err: pgconn.ErrorResponseToPgError(m)})
			return
		}
	}
}

// stream receives WAL into segment buffers and hands them to the flusher.
func (s *session) stream(ctx context.Context, tli uint32, start pglogrepl.LSN) (streamed bool, err error) {
	events := make(chan event, 64)
	stopReader := make(chan struct{})
	readerDone := make(chan struct{})
	go func() { s.read(events, stopReader); close(readerDone) }()
	defer func() {
		// Closing the socket ends the reader's blocked read; only then is
		// the connection ours alone again (run closes it properly).
		close(stopReader)
		s.conn.Conn().Close()
		<-readerDone
	}()

	f := newFlusher(s.r, tli, s.segSize, s.log)
	fctx, cancelFlusher := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelFlusher()
	go f.run(fctx)

	st := Status{Node: s.node.Name, Connected: true, Timeline: tli, Received: start, Flushed: start}
	segNo := wal.SegmentNo(start, s.segSize)
	buf := make([]byte, 0, s.segSize)
	partialQueued := start
	partialInFlight := false // synchronous mode keeps one partial write going at a time

	report := func() {
		if s.opts.OnStatus != nil {
			s.opts.OnStatus(st)
		}
	}
	sendStatus := func(reply bool) error {
		if err := s.sendStatus(st.Received, st.Flushed, reply); err != nil {
			return fmt.Errorf("send standby status: %w", err)
		}
		report()
		return nil
	}
	queuePartial := func() {
		if st.Received > partialQueued && len(buf) > 0 {
			f.queuePartial(segNo, append([]byte(nil), buf...), st.Received)
			partialQueued = st.Received
			partialInFlight = true
		}
	}
	// finish writes everything received and waits for the flusher.
	finish := func() error {
		queuePartial()
		f.close()
		for end := range f.flushed {
			st.Flushed = max(st.Flushed, end)
		}
		if err := f.err(); err != nil {
			return err
		}
		st.LastFlush = time.Now()
		return sendStatus(false)
	}

	flushTick := time.NewTicker(s.opts.FlushInterval)
	defer flushTick.Stop()
	statusTick := time.NewTicker(s.opts.StatusInterval)
	defer statusTick.Stop()
	if err := sendStatus(false); err != nil {
		return false, err
	}
	lastLog := time.Now()
	for {
		select {
		case <-ctx.Done():
			return streamed, finish()
		case end, ok := <-f.flushed:
			if !ok {
				return streamed, f.err()
			}
			if end >= partialQueued {
				partialInFlight = false
				if s.opts.Synchronous {
					queuePartial() // whatever arrived during the last write
				}
			}
			if end > st.Flushed {
				st.Flushed, st.LastFlush, streamed = end, time.Now(), true
				if err := sendStatus(false); err != nil {
					return streamed, err
				}
				if time.Since(lastLog) > time.Minute {
					s.log.Info("WAL stored", "flushed", st.Flushed.String(), "lag_bytes", st.LagBytes())
					lastLog = time.Now()
				}
			}
		case <-flushTick.C:
			queuePartial()
		case <-statusTick.C:
			if err := sendStatus(false); err != nil {
				return streamed, err
			}
		case ev := <-events:
			switch {
			case ev.err != nil:
				// Keep what arrived before the failure.
				ferr := finish()
				return streamed, errors.Join(ev.err, ferr)
			case ev.copyDone:
				// The server ended this timeline; store it all, then let
				// Run reconnect onto the next one.
				s.conn.Frontend().Send(&pgproto3.CopyDone{})
				s.conn.Frontend().Flush()
				if err := finish(); err != nil {
					return streamed, err
				}
				s.log.Info("timeline ended on the server", "timeline", tli, "at", st.Received.String())
				return true, errEndOfTimeline
			case ev.keepalive != nil:
				st.ServerEnd = max(st.ServerEnd, ev.keepalive.ServerWALEnd)
				if ev.keepalive.ReplyRequested {
					if err := sendStatus(false); err != nil {
						return streamed, err
					}
				}
			case ev.xlog != nil:
				x := ev.xlog
				st.ServerEnd = max(st.ServerEnd, x.ServerWALEnd)
				if x.WALStart != st.Received {
					finish()
					return streamed, fmt.Errorf("server sent WAL at %s, expected %s", x.WALStart, st.Received)
				}
				data := x.WALData
				for len(data) > 0 {
					n := min(len(data), int(s.segSize)-len(buf))
					buf = append(buf, data[:n]...)
					data = data[n:]
					st.Received += pglogrepl.LSN(n)
					if uint64(len(buf)) == s.segSize {
						f.queueComplete(segNo, buf, st.Received)
						partialQueued = st.Received
						segNo++
						buf = make([]byte, 0, s.segSize)
					}
				}
				if s.opts.Synchronous && !partialInFlight {
					queuePartial()
				}
			}
		}
	}
}

// sendStatus sends a standby status update with explicit positions:
// pglogrepl's helper would replace a zero flush position with the write
// position, which would tell the server WAL is safe before it is.
func (s *session) sendStatus(write, flush pglogrepl.LSN, reply bool) error {
	msg := make([]byte, 0, 1+4+34)
	msg = append(msg, 'd', 0, 0, 0, 0)
	msg = append(msg, pglogrepl.StandbyStatusUpdateByteID)
	msg = binary.BigEndian.AppendUint64(msg, uint64(write))
	msg = binary.BigEndian.AppendUint64(msg, uint64(flush))
	msg = binary.BigEndian.AppendUint64(msg, uint64(flush)) // applied: nothing is replayed here
	msg = binary.BigEndian.AppendUint64(msg, uint64(pgTime(time.Now())))
	if reply {
		msg = append(msg, 1)
	} else {
		msg = append(msg, 0)
	}
	binary.BigEndian.PutUint32(msg[1:5], uint32(len(msg)-1))
	return s.conn.Frontend().SendUnbufferedEncodedCopyData(msg)
}

// pgTime is microseconds since 2000-01-01, PostgreSQL's epoch.
func pgTime(t time.Time) int64 {
	return t.Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds()
}

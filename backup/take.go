package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgvault/pgvault/internal/pg"
	"github.com/pgvault/pgvault/internal/pg/relmap"
	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// Options configure Take.
type Options struct {
	Label          string
	FastCheckpoint bool
	// Standalone also stores the WAL from start to stop, so the backup
	// restores and starts without any WAL archive.
	Standalone bool
	// MaxRateKB throttles the server (kB/s, 32..1048576); 0 is unlimited.
	MaxRateKB int
	// Progress, if set, is called as data arrives.
	Progress func(Progress)
	// Method is how the files are read; "" is MethodAuto.
	Method Method
	// Session opens a plain (not replication) session to database db of
	// the same server ("": the default one), which a local backup holds
	// open from pg_backup_start to pg_backup_stop, and through which
	// every backup lists the databases and their relations when it ends.
	// Without it the backup streams and records neither.
	Session func(ctx context.Context, db string) (*pgconn.PgConn, error)
	// DataDir is where a local backup reads the data directory ("": where
	// the server says it is).
	DataDir string
	// StreamWait bounds how long a backup waits, when a WAL streamer or
	// archive_command is writing into the repository, for it to store the
	// WAL up to the backup's stop position (0: 5 minutes).
	StreamWait time.Duration
}

// Progress is a running report of a base backup.
type Progress struct {
	BytesDone  int64 // as the server counts them
	BytesTotal int64 // the server's estimate; 0 when unknown
	Stored     int64 // sealed bytes added to the repository so far
}

// Result describes a finished base backup.
type Result struct {
	Snapshot *repo.Snapshot
	Info     *Info
	Duration time.Duration
}

// ErrUnsupportedServer: the server is older than what Take speaks, or
// newer than this pgvault knows (pg.CheckMajor).
var ErrUnsupportedServer = pg.ErrUnsupportedServer

// Take runs BASE_BACKUP on conn (a physical replication connection) and
// streams every file straight into the repository as one snapshot: no
// copy of the data directory touches local disk. The snapshot is listed
// only when the whole backup, its manifest and PostgreSQL's
// backup_manifest are durable.
func Take(ctx context.Context, conn *pgconn.PgConn, r *repo.Repository, opts Options) (*Result, error) {
	version, _, _ := strings.Cut(conn.ParameterStatus("server_version"), " ")
	if err := pg.CheckMajor(version, pg.OldestBackupMajor, "base backups"); err != nil {
		return nil, err
	}
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}
	segSize, err := walSegmentSize(ctx, conn)
	if err != nil {
		return nil, err
	}
	started := time.Now()
	label := opts.Label
	if label == "" {
		label = "pgvault " + started.UTC().Format(time.RFC3339)
	}
	info := &Info{SystemIdentifier: sys.SystemID, ServerVersion: version, Label: label, StartTime: started.UTC(),
		Standalone: opts.Standalone, WALSegmentSize: segSize}

	in := &ingest{w: r.NewSnapshotWriter(ctx), r: r, info: info, opts: opts, t0: time.Now()}
	// With a WAL streamer writing into this repository, or archive_command
	// pushing into it, PostgreSQL's wait for archive_command (which it
	// polls once a second, so at least a second) is the wrong wait: the
	// backup waits instead until this repository holds WAL up to its stop
	// position, which is what makes it restorable.
	ownWait := !opts.Standalone && (streamerActive(ctx, r) || pushingHere(ctx, conn, r, sys, segSize))
	if ownWait {
		r.Logger().Debug("the backup waits for its WAL in this repository, not for PostgreSQL's archive wait")
	}
	local, err := chooseLocal(ctx, r, opts, sys.SystemID, pg.Major(version))
	if err != nil {
		return nil, err
	}
	var res protocolResult
	if local != nil {
		defer local.session.Close(context.WithoutCancel(ctx))
		info.Method = MethodLocal
		res, err = in.takeLocal(ctx, local, uint32(sys.Timeline), !ownWait)
	} else {
		info.Method = MethodStream
		popts := protocolOptions{Label: label, FastCheckpoint: opts.FastCheckpoint, WAL: opts.Standalone, NoWait: ownWait, MaxRateKB: opts.MaxRateKB}
		res, err = runBaseBackup(ctx, conn, popts, protocolHandler{
			started:  in.started,
			archive:  in.archive,
			data:     in.data,
			manifest: in.startManifest,
			progress: in.progress,
			notice:   in.notice,
		})
	}
	if err == nil {
		err = in.finishArchive()
	} else {
		in.finishArchive()
	}
	if err != nil {
		in.w.Abort()
		return nil, err
	}
	info.StopLSN, info.StopTimeline = res.StopLSN, res.StopTimeline
	info.Databases = databasesOf(ctx, r, opts, local)
	attachments := relationsOf(ctx, r, opts)
	r.Logger().Debug("base backup stream ended", "stop_lsn", res.StopLSN.String(), "seconds", time.Since(in.t0).Seconds(), "bytes", in.w.Stats().Bytes)
	if ownWait {
		if err := waitForStreamedWAL(ctx, r, res.StopTimeline, res.StopLSN, segSize, opts.StreamWait); err != nil {
			info.Warnings = append(info.Warnings, err.Error())
		}
	}
	info.StopTime = time.Now().UTC()
	info.ChecksumFailures = res.ChecksumFailures
	if in.manifest == nil {
		in.w.Abort()
		return nil, errors.New("the server sent no backup_manifest")
	}
	if _, err := in.w.AddFile("backup_manifest", repo.NodeMeta{Mode: 0o600, UID: in.owner.UID, GID: in.owner.GID, ModTime: info.StopTime}, bytes.NewReader(in.manifest.Bytes()), repo.SplitCDC); err != nil {
		in.w.Abort()
		return nil, err
	}
	info.BytesRead = in.w.Stats().Bytes
	meta, err := json.Marshal(info)
	if err != nil {
		in.w.Abort()
		return nil, err
	}
	commitStart := time.Now()
	defer func() { r.Logger().Debug("base backup committed", "commit_seconds", time.Since(commitStart).Seconds()) }()
	snap, err := in.w.Commit(ctx, repo.SnapshotInfo{
		Kind: SnapshotKind, Label: label, StartTime: info.StartTime, EndTime: info.StopTime, Meta: meta, Attachments: attachments,
	})
	if err != nil {
		return nil, err
	}
	return &Result{Snapshot: snap, Info: info, Duration: time.Since(started)}, nil
}

// databasesOf lists the server's databases for partial restores, over the
// local backup's session or a new plain one. A server that refuses the
// plain session (a role allowed only replication) costs the list, not the
// backup.
func databasesOf(ctx context.Context, r *repo.Repository, opts Options, local *localSource) []Database {
	var session *pgconn.PgConn
	switch {
	case local != nil:
		session = local.session
	case opts.Session != nil:
		s, err := opts.Session(ctx, "")
		if err != nil {
			r.Logger().Debug("no database list for partial restores: no plain session", "error", err)
			return nil
		}
		defer s.Close(context.WithoutCancel(ctx))
		session = s
	default:
		return nil
	}
	dbs, err := ListDatabases(ctx, session)
	if err != nil {
		r.Logger().Debug("no database list for partial restores", "error", err)
		return nil
	}
	return dbs
}

// relationsOf reads the names and files of every database's relations
// (relmap) as attachments of the backup, over plain sessions; a server
// that refuses them costs the map (and the browse mount's tables/
// folder), not the backup.
func relationsOf(ctx context.Context, r *repo.Repository, opts Options) map[string][]byte {
	if opts.Session == nil {
		return nil
	}
	m, err := relmap.Capture(ctx, opts.Session)
	var data []byte
	if err == nil {
		data, err = m.Encode()
	}
	if err != nil {
		r.Logger().Debug("no relation map for the browse mount's tables/ folder", "error", err)
		return nil
	}
	return map[string][]byte{relmap.Attachment: data}
}

// chooseLocal opens the local source when the method asks for one or, for
// MethodAuto, when one can be opened; nil means stream.
func chooseLocal(ctx context.Context, r *repo.Repository, opts Options, systemID string, major int) (*localSource, error) {
	method := opts.Method
	if method == "" {
		method = MethodAuto
	}
	if method == MethodStream {
		return nil, nil
	}
	local, err := openLocal(ctx, opts, systemID, major)
	if err != nil {
		if method == MethodLocal || !errors.Is(err, ErrLocalUnavailable) {
			return nil, err
		}
		r.Logger().Debug("the backup streams its files with BASE_BACKUP", "why", err)
		return nil, nil
	}
	r.Logger().Debug("the backup reads the data directory itself", "data_directory", local.dataDir)
	return local, nil
}

// walSegmentSize asks the server.
func walSegmentSize(ctx context.Context, conn *pgconn.PgConn) (uint64, error) {
	v, err := pg.Show(ctx, conn, "wal_segment_size")
	if err != nil {
		return 0, err
	}
	size, err := wal.ParseMemorySize(v)
	if err != nil || !wal.ValidSegmentSize(size) {
		return 0, fmt.Errorf("wal_segment_size %q is not a valid WAL segment size", v)
	}
	return size, nil
}

// Archive data crosses from the receiving goroutine to the tar reader in
// blocks of blockSize bytes, at most blocksQueued waiting: one hand-off per
// 256 KiB instead of one per CopyData message (about 32 KiB). Each hand-off
// can wake a parked goroutine, and at one per message the wake-ups were a
// visible share of a backup's CPU time. The blocks are recycled.
const (
	blockSize    = 256 << 10
	blocksQueued = 8
)

// ingest turns the BASE_BACKUP stream into snapshot entries. Archive data
// goes through a bounded channel to one tar-reading goroutine at a time,
// so receiving from the network overlaps with splitting and hashing.
type ingest struct {
	w    *repo.SnapshotWriter
	r    *repo.Repository
	info *Info
	opts Options

	total    int64
	done     int64
	manifest *bytes.Buffer // non-nil once the manifest started

	chunks chan []byte // current archive's data, in blocks
	free   chan []byte // blocks the tar reader is done with
	block  []byte      // the block being filled
	tarErr chan error  // the tar goroutine's result
	owner  repo.NodeMeta
	t0     time.Time // when BASE_BACKUP was sent, for the phase timings in debug logs
}

func (in *ingest) started(start pglogrepl.LSN, tli uint32, tablespaces []Tablespace, total int64) error {
	in.r.Logger().Debug("base backup started: checkpoint done", "start_lsn", start.String(), "seconds", time.Since(in.t0).Seconds())
	in.info.StartLSN, in.info.Timeline, in.info.Tablespaces, in.total = start, tli, tablespaces, total
	if in.info.Tablespaces == nil {
		in.info.Tablespaces = []Tablespace{}
	}
	return nil
}

func (in *ingest) archive(name, tablespacePath string) error {
	if err := in.finishArchive(); err != nil {
		return err
	}
	prefix := ""
	if oid := ArchiveOID(name); oid != 0 {
		prefix = "pg_tblspc/" + strconv.FormatUint(uint64(oid), 10)
		known := false
		for _, ts := range in.info.Tablespaces {
			known = known || ts.OID == oid
		}
		if !known {
			return fmt.Errorf("base backup: archive %s for a tablespace the server did not list", name)
		}
	}
	in.chunks = make(chan []byte, blocksQueued)
	if in.free == nil {
		in.free = make(chan []byte, blocksQueued+2)
	}
	in.tarErr = make(chan error, 1)
	rd := &chanReader{ch: in.chunks, free: in.free}
	go func() { in.tarErr <- in.readTar(prefix, rd) }()
	return nil
}

func (in *ingest) data(r io.Reader, n int) error {
	if in.manifest != nil {
		if _, err := io.CopyN(in.manifest, r, int64(n)); err != nil {
			return fmt.Errorf("receive backup_manifest: %w", unexpectedEOF(err))
		}
		return nil
	}
	if in.chunks == nil {
		return errors.New("base backup: data before the first archive")
	}
	for n > 0 {
		if in.block == nil {
			select {
			case b := <-in.free:
				in.block = b[:0]
			default:
				in.block = make([]byte, 0, blockSize)
			}
		}
		m := min(n, cap(in.block)-len(in.block))
		if _, err := io.ReadFull(r, in.block[len(in.block):len(in.block)+m]); err != nil {
			return fmt.Errorf("receive base backup: %w", unexpectedEOF(err))
		}
		in.block, n = in.block[:len(in.block)+m], n-m
		if len(in.block) == cap(in.block) {
			if err := in.sendBlock(); err != nil {
				return err
			}
		}
	}
	return nil
}

// sendBlock hands the filled block to the tar reader.
func (in *ingest) sendBlock() error {
	b := in.block
	in.block = nil
	select {
	case in.chunks <- b:
		return nil
	case err := <-in.tarErr:
		// The reader stopped early: it failed, or the tar ended before the
		// stream did, which is a failure too.
		in.chunks, in.tarErr = nil, nil
		if err == nil {
			err = errors.New("base backup: data after the end of an archive")
		}
		return err
	}
}

// finishArchive ends the current archive and waits for its reader.
func (in *ingest) finishArchive() error {
	if in.chunks == nil {
		return nil
	}
	if len(in.block) > 0 {
		if err := in.sendBlock(); err != nil {
			return err
		}
	}
	close(in.chunks)
	err := <-in.tarErr
	in.chunks, in.tarErr = nil, nil
	return err
}

func (in *ingest) startManifest() error {
	if err := in.finishArchive(); err != nil {
		return err
	}
	in.manifest = &bytes.Buffer{}
	return nil
}

func (in *ingest) progress(done int64) {
	in.done = done
	if in.opts.Progress != nil {
		in.opts.Progress(Progress{BytesDone: done, BytesTotal: in.total, Stored: in.r.StoredBytes()})
	}
}

func (in *ingest) notice(n *pgconn.Notice) {
	if n.Severity == "WARNING" || n.Severity == "ERROR" {
		msg := n.Message
		if n.Detail != "" {
			msg += ": " + n.Detail
		}
		in.info.Warnings = append(in.info.Warnings, msg)
	}
}

// readTar stores every entry of one archive under prefix.
func (in *ingest) readTar(prefix string, rd *chanReader) error {
	defer io.Copy(io.Discard, rd) // let the sender finish even if we stop early
	tr := tar.NewReader(rd)
	rootSet := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("base backup: read archive: %w", err)
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if prefix != "" {
			name = path.Join(prefix, name)
		}
		meta := repo.NodeMeta{Mode: fs.FileMode(h.Mode) & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), UID: uint32(h.Uid), GID: uint32(h.Gid), ModTime: h.ModTime}
		if !rootSet {
			// An archive has no entry for its own root (the data directory
			// or the tablespace folder): it belongs to the same user as its
			// files and is 0700, as PostgreSQL requires.
			rootSet = true
			if prefix == "" {
				in.owner = meta
			}
			if err := in.w.AddDir(prefix, repo.NodeMeta{Mode: 0o700, UID: meta.UID, GID: meta.GID, ModTime: in.info.StartTime}); err != nil {
				return err
			}
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if name == "" || name == prefix {
				if prefix == "" {
					err = in.w.AddDir("", meta)
				}
				break
			}
			err = in.w.AddDir(name, meta)
		case tar.TypeSymlink:
			err = in.w.AddSymlink(name, h.Linkname, meta)
		case tar.TypeReg:
			var src io.Reader = tr
			var keep *bytes.Buffer
			if prefix == "" && (name == "backup_label" || name == "tablespace_map") {
				keep = &bytes.Buffer{}
				src = io.TeeReader(tr, keep)
			}
			var n int64
			n, err = in.w.AddFile(name, meta, src, SplitFor(name))
			if err == nil && n != h.Size {
				err = fmt.Errorf("base backup: %s: archive promised %d bytes, sent %d", name, h.Size, n)
			}
			if keep != nil {
				if name == "backup_label" {
					in.info.BackupLabel = keep.String()
				} else {
					in.info.TablespaceMap = keep.String()
				}
			}
		default:
			err = fmt.Errorf("base backup: %s: unexpected archive entry type %q", name, h.Typeflag)
		}
		if err != nil {
			return err
		}
	}
}

// chanReader reads the byte slices sent on ch, in order, until ch closes,
// and gives each one back on free (when there is room) once it is read.
type chanReader struct {
	ch    <-chan []byte
	free  chan<- []byte
	block []byte // the slice being read, whole
	buf   []byte // its unread rest
}

func (c *chanReader) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		if c.block != nil && c.free != nil {
			select {
			case c.free <- c.block:
			default:
			}
		}
		c.block = nil
		b, ok := <-c.ch
		if !ok {
			return 0, io.EOF
		}
		c.block, c.buf = b, b
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

// streamerActive reports whether a live WAL streamer holds a lock on the
// repository.
func streamerActive(ctx context.Context, r *repo.Repository) bool {
	locks, err := r.Locks(ctx)
	if err != nil {
		return false
	}
	for _, l := range locks {
		if l.Kind == repo.LockConcurrent && strings.Contains(l.Purpose, "wal stream") && !l.Stale(r.Now()) {
			return true
		}
	}
	return false
}

// pushingHere reports whether the server's archive_command is pgvault's
// wal push into this repository: archiving is on, the command runs
// `pgvault ... wal push`, and either it names this repository's location
// or one of the last few completed segments before the server's current
// position is already in this repository (so a command pushing into
// another repository, or an archiver far behind, leaves the wait to
// PostgreSQL). The location check covers a new repository, which holds
// no segment yet: the first backups after setup would otherwise wait
// for PostgreSQL's once-a-second look at the archive status.
func pushingHere(ctx context.Context, conn *pgconn.PgConn, r *repo.Repository, sys pglogrepl.IdentifySystemResult, segSize uint64) bool {
	mode, err1 := pg.Show(ctx, conn, "archive_mode")
	cmd, err2 := pg.Show(ctx, conn, "archive_command")
	// An archive_library, when set, archives instead of the command.
	lib, err3 := pg.Show(ctx, conn, "archive_library")
	if err1 != nil || err2 != nil || err3 != nil || lib != "" || (mode != "on" && mode != "always") ||
		!strings.Contains(cmd, "pgvault") || !strings.Contains(cmd, "wal push") {
		return false
	}
	if namesRepository(cmd, r.Backend().Location()) {
		return true
	}
	cur := wal.SegmentOf(uint32(sys.Timeline), sys.XLogPos, segSize)
	for i := 0; i < 4 && cur.No > 0; i++ {
		cur.No--
		if _, err := r.LoadWALFile(ctx, uint32(sys.Timeline), cur.Name(segSize)); err == nil {
			return true
		}
	}
	return false
}

// namesRepository reports whether a command names the repository at
// location (a backend's Location: file://PATH, s3://BUCKET/PREFIX with
// an endpoint note, sftp://...) as a whole word: file repositories also
// by their bare path, and /srv/repo never matches /srv/repo2 or
// /old/srv/repo.
func namesRepository(cmd, location string) bool {
	loc, _, _ := strings.Cut(location, " (")
	names := []string{loc}
	if p, ok := strings.CutPrefix(loc, "file://"); ok {
		names = append(names, p)
	}
	for _, name := range names {
		if len(name) < 2 {
			continue
		}
		for from := 0; ; {
			i := strings.Index(cmd[from:], name)
			if i < 0 {
				break
			}
			start, end := from+i, from+i+len(name)
			if (start == 0 || !pathByte(cmd[start-1])) && (end == len(cmd) || !nameByte(cmd[end])) {
				return true
			}
			from = start + 1
		}
	}
	return false
}

// nameByte reports whether b can continue a file or host name; pathByte
// also accepts the separator.
func nameByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || strings.IndexByte("._-~@:+", b) >= 0
}

func pathByte(b byte) bool { return nameByte(b) || b == '/' }

// waitForStreamedWAL waits until the WAL catalogue holds the segment with
// stop (complete, or a .partial that reaches past it), stored by a
// streamer or by archive_command. A timeout is not
// fatal: the backup's files are complete, but it can only be restored
// once the WAL arrives, which the returned warning says.
func waitForStreamedWAL(ctx context.Context, r *repo.Repository, tli uint32, stop pglogrepl.LSN, segSize uint64, limit time.Duration) error {
	if limit <= 0 {
		limit = 5 * time.Minute
	}
	seg := wal.SegmentOf(tli, stop, segSize)
	name := seg.Name(segSize)
	need := int64(stop - seg.Start(segSize))
	deadline := time.Now().Add(limit)
	for {
		if _, err := r.LoadWALFile(ctx, tli, name); err == nil {
			return nil
		}
		if wf, err := r.LoadWALFile(ctx, tli, name+".partial"); err == nil && wf.Size >= need {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the WAL streamer had not stored WAL up to %s (segment %s) %s after the backup ended: the backup restores once it has", stop, name, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

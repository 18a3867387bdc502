package backup

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sys/unix"

	"github.com/pgvault/pgvault/repo"
)

// Method says how a base backup reads the data directory.
type Method string

const (
	// MethodAuto is MethodLocal when the data directory can be read on
	// this machine, and MethodStream otherwise.
	MethodAuto Method = "auto"
	// MethodStream has the server send the files with BASE_BACKUP over
	// the replication connection.
	MethodStream Method = "stream"
	// MethodLocal reads the files from the disk, between pg_backup_start
	// and pg_backup_stop on a plain session, as pgBackRest and WAL-G do:
	// the server neither reads nor sends them, and both ends of a socket
	// are spared the copy.
	MethodLocal Method = "local"
	// MethodSynthetic marks a backup rolled forward from a parent backup
	// by replaying the repository's WAL (pgvault backup --synthetic): the
	// database server read nothing for it.
	MethodSynthetic Method = "synthetic"
)

// ParseMethod reads a --method value.
func ParseMethod(s string) (Method, error) {
	switch m := Method(s); m {
	case "", MethodAuto:
		return MethodAuto, nil
	case MethodStream, MethodLocal:
		return m, nil
	}
	return "", fmt.Errorf("backup method %q: want auto, stream or local", s)
}

// SessionFor returns an Options.Session that opens a plain session with
// the settings of a replication connection (without "replication"), to
// database db ("": the connection's own). A
// physical replication connection names no database, so without a
// dbname the session goes to "postgres", as pgBackRest's does, rather
// than to a database named like the role.
func SessionFor(replication *pgconn.Config) func(ctx context.Context, db string) (*pgconn.PgConn, error) {
	return func(ctx context.Context, db string) (*pgconn.PgConn, error) {
		cfg := replication.Copy()
		delete(cfg.RuntimeParams, "replication")
		if db != "" {
			cfg.Database = db
		}
		if cfg.Database == "" {
			cfg.Database = "postgres"
		}
		return pgconn.ConnectConfig(ctx, cfg)
	}
}

// ErrLocalUnavailable: the data directory cannot be read here (another
// machine, another user, a standby, or an option only BASE_BACKUP has).
var ErrLocalUnavailable = errors.New("a local backup is not possible")

// localSource is a data directory this process reads itself.
type localSource struct {
	session    *pgconn.PgConn // plain session that holds the backup open
	dataDir    string
	versionDir string // a tablespace's folder for this server: PG_15_<catalog version>
	checksums  bool   // data_checksums is on
}

// openLocal checks that a local backup can be taken and opens its session.
// Every reason it cannot wraps ErrLocalUnavailable.
func openLocal(ctx context.Context, opts Options, systemID string, major int) (*localSource, error) {
	switch {
	case opts.MaxRateKB > 0:
		return nil, fmt.Errorf("%w: --max-rate throttles BASE_BACKUP", ErrLocalUnavailable)
	case opts.Session == nil:
		return nil, fmt.Errorf("%w: no plain session to the server", ErrLocalUnavailable)
	}
	session, err := opts.Session(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("%w: plain session: %w", ErrLocalUnavailable, err)
	}
	src, err := checkLocal(ctx, session, opts.DataDir, systemID, major)
	if err != nil {
		session.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return src, nil
}

func checkLocal(ctx context.Context, session *pgconn.PgConn, dataDir, systemID string, major int) (*localSource, error) {
	row, err := queryRow(ctx, session, `SELECT pg_is_in_recovery()::text, current_setting('data_checksums'),
		has_function_privilege('pg_backup_start(text, boolean)', 'execute')::text,
		has_function_privilege('pg_backup_stop(boolean)', 'execute')::text`)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLocalUnavailable, err)
	}
	switch {
	case row[0] == "true":
		return nil, fmt.Errorf("%w: the server is a standby", ErrLocalUnavailable)
	case row[2] != "true" || row[3] != "true":
		return nil, fmt.Errorf("%w: the role may not run pg_backup_start and pg_backup_stop", ErrLocalUnavailable)
	}
	if dataDir == "" {
		dir, err := queryRow(ctx, session, "SELECT current_setting('data_directory')")
		if err != nil {
			return nil, fmt.Errorf("%w: the server's data_directory: %w", ErrLocalUnavailable, err)
		}
		dataDir = dir[0]
	}
	// The same path on another machine, or a copy, is another cluster.
	f, err := os.Open(filepath.Join(dataDir, "global", "pg_control"))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLocalUnavailable, err)
	}
	var control [16]byte // system_identifier, pg_control_version, catalog_version_no
	_, err = io.ReadFull(f, control[:])
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("%w: read %s/global/pg_control: %w", ErrLocalUnavailable, dataDir, err)
	}
	if id := strconv.FormatUint(binary.LittleEndian.Uint64(control[0:8]), 10); id != systemID {
		return nil, fmt.Errorf("%w: %s holds cluster %s, the server is %s", ErrLocalUnavailable, dataDir, id, systemID)
	}
	return &localSource{
		session:    session,
		dataDir:    dataDir,
		versionDir: fmt.Sprintf("PG_%d_%d", major, binary.LittleEndian.Uint32(control[12:16])),
		checksums:  row[1] == "on",
	}, nil
}

// queryRow runs a query that returns one row of text columns.
func queryRow(ctx context.Context, conn *pgconn.PgConn, sql string, args ...string) ([]string, error) {
	params := make([][]byte, len(args))
	for i, a := range args {
		params[i] = []byte(a)
	}
	res := conn.ExecParams(ctx, sql, params, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, res.Err
	}
	if len(res.Rows) != 1 {
		return nil, fmt.Errorf("%s: %d rows, want 1", strings.Fields(sql)[1], len(res.Rows))
	}
	out := make([]string, len(res.Rows[0]))
	for i, v := range res.Rows[0] {
		out[i] = string(v)
	}
	return out, nil
}

// takeLocal reads the data directory between pg_backup_start and
// pg_backup_stop into the snapshot, and writes PostgreSQL's
// backup_manifest for it. waitArchive is pg_backup_stop's wait for
// archive_command. Closing the session (the caller does) ends the backup
// on the server if this returns early.
func (in *ingest) takeLocal(ctx context.Context, src *localSource, tli uint32, waitArchive bool) (protocolResult, error) {
	var res protocolResult
	// The session is idle while the files are read, and pg_backup_stop
	// may wait for the archiver: a timeout would end the backup.
	if _, err := queryRow(ctx, src.session, "SELECT set_config('statement_timeout', '0', false), set_config('idle_session_timeout', '0', false)"); err != nil {
		return res, err
	}
	fast := "false"
	if in.opts.FastCheckpoint {
		fast = "true"
	}
	row, err := queryRow(ctx, src.session, "SELECT pg_backup_start($1, $2)::text", in.info.Label, fast)
	if err != nil {
		return res, fmt.Errorf("pg_backup_start: %w", err)
	}
	start, err := pglogrepl.ParseLSN(row[0])
	if err != nil {
		return res, fmt.Errorf("pg_backup_start: %w", err)
	}
	warn := func(msg string) { in.info.Warnings = append(in.info.Warnings, msg) }
	entries, spaces, err := localWalk(src.dataDir, src.versionDir, warn)
	if err != nil {
		return res, err
	}
	var total int64
	sizes := map[uint32]int64{}
	for _, e := range entries {
		if !e.dir {
			total += e.info.Size()
			if oid, ok := tablespaceOf(e.rel); ok {
				sizes[oid] += e.info.Size()
			}
		}
	}
	tablespaces := make([]Tablespace, len(spaces))
	for i, ts := range spaces {
		tablespaces[i] = Tablespace{OID: ts.oid, Location: ts.location, Size: sizes[ts.oid]}
	}
	if err := in.started(start, tli, tablespaces, total); err != nil {
		return res, err
	}
	rootInfo, err := os.Stat(src.dataDir)
	if err != nil {
		return res, err
	}
	in.owner = nodeMeta(rootInfo)
	if err := in.w.AddDir("", in.owner); err != nil {
		return res, err
	}
	for _, ts := range spaces {
		// As BASE_BACKUP's archive of it: the tablespace's own folder.
		meta := in.owner
		meta.Mode, meta.ModTime = 0o700, in.info.StartTime
		if err := in.w.AddDir("pg_tblspc/"+strconv.FormatUint(uint64(ts.oid), 10), meta); err != nil {
			return res, err
		}
	}
	mf := newPGManifest()
	lc := &localCopy{in: in, start: start, checksums: src.checksums}
	defer lc.close()
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if e.dir {
			meta := nodeMeta(e.info)
			if e.info.Mode()&fs.ModeSymlink != 0 { // pg_wal on another disk
				meta.Mode = 0o700
			}
			if err := in.w.AddDir(e.rel, meta); err != nil {
				return res, err
			}
			continue
		}
		if err := lc.file(e, mf); err != nil {
			return res, err
		}
	}
	if lc.failures > 0 {
		warn(fmt.Sprintf("%d total checksum verification failures", lc.failures))
		res.ChecksumFailures = true
	}
	row, err = queryRow(ctx, src.session, "SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_backup_stop($1)", strconv.FormatBool(waitArchive))
	if err != nil {
		return res, fmt.Errorf("pg_backup_stop: %w", err)
	}
	if res.StopLSN, err = pglogrepl.ParseLSN(row[0]); err != nil {
		return res, fmt.Errorf("pg_backup_stop: %w", err)
	}
	res.StopTimeline = tli
	in.info.BackupLabel, in.info.TablespaceMap = row[1], row[2]
	if in.opts.Standalone {
		if err := in.addLocalWAL(ctx, src, tli, start, res.StopLSN); err != nil {
			return res, err
		}
	}
	now := time.Now()
	files := []struct{ name, content string }{{"backup_label", row[1]}, {"tablespace_map", row[2]}}
	for _, f := range files {
		if f.name == "tablespace_map" && f.content == "" {
			continue
		}
		meta := in.owner
		meta.Mode, meta.ModTime = 0o600, now
		if _, err := in.w.AddFile(f.name, meta, strings.NewReader(f.content), repo.SplitCDC); err != nil {
			return res, err
		}
		mf.add(f.name, int64(len(f.content)), now, crc32.Checksum([]byte(f.content), castagnoli))
	}
	in.startManifest()
	in.manifest.Write(mf.finish(tli, start, res.StopLSN))
	in.r.Logger().Debug("local backup read", "files", lc.files, "bytes", lc.done, "seconds", time.Since(in.t0).Seconds())
	return res, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// tablespaceOf returns the OID of the tablespace a snapshot path is in.
func tablespaceOf(rel string) (uint32, bool) {
	rest, ok := strings.CutPrefix(rel, "pg_tblspc/")
	if !ok {
		return 0, false
	}
	oid, _, _ := strings.Cut(rest, "/")
	n, err := strconv.ParseUint(oid, 10, 32)
	return uint32(n), err == nil
}

func nodeMeta(fi fs.FileInfo) repo.NodeMeta {
	m := repo.NodeMeta{Mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), ModTime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		m.UID, m.GID = st.Uid, st.Gid
	}
	return m
}

// Files of at least directMin bytes are read with O_DIRECT, directRead
// bytes at a time, into one page-aligned buffer. Through the page cache,
// every page read is a page the kernel must find, fill and copy, and
// evict later, pushing out the database's own cache: a cold 1 GiB
// relation segment took 0.90 s of system time read in 128 KiB through
// the cache, and 0.10 s with O_DIRECT in 1 MiB (by hand, this VM, ext4).
// Linux writes dirty cached pages of the range back before a direct
// read, so the read sees what PostgreSQL wrote. Small files go through
// the cache, where read-ahead serves them better than one disk read each.
// A goroutine reads up to directAhead blocks ahead of the splitter, so
// the disk works while the chunks are hashed and compressed.
const (
	directMin   = 1 << 20
	directRead  = 1 << 20
	directAhead = 4
)

// localCopy stores files of a local backup, checking page checksums on
// the way as BASE_BACKUP does.
type localCopy struct {
	in        *ingest
	start     pglogrepl.LSN
	checksums bool
	files     int
	done      int64
	failures  int
	direct    []byte // page-aligned buffers for O_DIRECT reads; nil: none
}

// close releases the direct-read buffer.
func (lc *localCopy) close() {
	if lc.direct != nil {
		unix.Munmap(lc.direct)
		lc.direct = nil
	}
}

// file stores one regular file and adds it to the manifest. A file that
// is gone when it is opened is left out: it was dropped, and WAL replay
// drops it too.
func (lc *localCopy) file(e localEntry, mf *pgManifest) error {
	f, direct, err := lc.open(e)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	rd := &localReader{lc: lc, f: f, src: f, name: e.src, left: e.info.Size(), check: lc.checksums && e.checksummed, block: e.firstBlock, first: e.firstBlock}
	if direct {
		rd.ahead = newAheadReader(f, lc.direct, directRead)
		rd.src = rd.ahead
	}
	defer rd.close()
	n, err := lc.in.w.AddFile(e.rel, nodeMeta(e.info), rd, SplitFor(e.rel))
	if err != nil {
		return err
	}
	rd.finish()
	lc.files++
	mf.add(e.rel, n, e.info.ModTime(), rd.crc)
	return nil
}

// open opens a file, with O_DIRECT when it is large and the file system
// takes it.
func (lc *localCopy) open(e localEntry) (*os.File, bool, error) {
	if e.info.Size() >= directMin {
		if lc.direct == nil {
			// An anonymous mapping is page-aligned, as O_DIRECT needs.
			if buf, err := unix.Mmap(-1, 0, directAhead*directRead, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE); err == nil {
				lc.direct = buf
			}
		}
		if lc.direct != nil {
			f, err := os.OpenFile(e.src, os.O_RDONLY|unix.O_DIRECT, 0)
			if err == nil || !errors.Is(err, unix.EINVAL) {
				return f, err == nil, err
			}
		}
	}
	f, err := os.Open(e.src)
	return f, false, err
}

// localReader reads a file up to the size it had in the walk (a file that
// grows meanwhile is taken as it was; WAL replay brings the rest),
// computing its CRC32C and checking its pages.
type localReader struct {
	lc    *localCopy
	f     *os.File
	name  string
	left  int64
	crc   uint32
	check bool
	block uint32       // block number of the next page to check
	first uint32       // block number of the file's first page
	part  []byte       // a page split across reads
	bad   int          // this file's failures
	src   io.Reader    // f, or ahead reading it
	ahead *aheadReader // O_DIRECT read-ahead; nil: through the cache
	off   int64        // bytes read from f so far
}

func (r *localReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.read(p)
	r.left -= int64(n)
	data := p[:n]
	r.crc = crc32.Update(r.crc, castagnoli, data)
	r.lc.done += int64(n)
	r.lc.in.progress(r.lc.done)
	if r.check {
		r.pages(data)
	}
	if errors.Is(err, io.EOF) {
		r.left = 0
	}
	return n, err
}

// read reads into p from the file.
func (r *localReader) read(p []byte) (int, error) {
	n, err := r.src.Read(p)
	r.off += int64(n)
	if r.ahead != nil && errors.Is(err, unix.EINVAL) && n == 0 {
		// The file system took O_DIRECT at open but not for reads: go on
		// through the cache from here.
		if err := r.buffered(); err != nil {
			return 0, err
		}
		return r.read(p)
	}
	return n, err
}

// buffered reopens the file without O_DIRECT at the current offset.
func (r *localReader) buffered() error {
	f, err := os.Open(r.name)
	if err != nil {
		return err
	}
	if _, err := f.Seek(r.off, io.SeekStart); err != nil {
		f.Close()
		return err
	}
	r.close()
	r.f, r.src, r.ahead = f, f, nil
	return nil
}

// close stops the read-ahead and closes the file.
func (r *localReader) close() {
	if r.ahead != nil {
		r.ahead.close()
		r.ahead = nil
	}
	r.f.Close()
}

// pages checks the whole pages in data, carrying a split one over.
func (r *localReader) pages(data []byte) {
	if len(r.part) > 0 {
		take := min(PageSize-len(r.part), len(data))
		r.part, data = append(r.part, data[:take]...), data[take:]
		if len(r.part) < PageSize {
			return
		}
		r.verify(r.part)
		r.part = r.part[:0]
	}
	whole := len(data) / PageSize * PageSize
	r.verify(data[:whole])
	if rest := data[whole:]; len(rest) > 0 {
		if r.part == nil {
			r.part = make([]byte, 0, PageSize)
		}
		r.part = append(r.part, rest...)
	}
}

func (r *localReader) verify(pages []byte) {
	if len(pages) == 0 {
		return
	}
	for _, blk := range badPages(pages, r.block, r.lc.start) {
		r.reverify(blk)
	}
	r.block += uint32(len(pages) / PageSize)
}

// reverify reads a failing page again before calling it corrupt: the
// first read can catch a page half-written by the server (a torn read),
// and then the second sees it whole or with an LSN past the backup's
// start, which WAL replay overwrites anyway.
func (r *localReader) reverify(blk uint32) {
	var page [PageSize]byte
	// Through the cache: an O_DIRECT descriptor wants an aligned buffer.
	f, err := os.Open(r.name)
	if err != nil {
		return // dropped meanwhile, which WAL replay repeats: not corruption
	}
	n, _ := f.ReadAt(page[:], int64(blk-r.first)*PageSize)
	f.Close()
	if n < PageSize {
		return // truncated meanwhile, as above
	}
	if len(badPages(page[:], blk, r.lc.start)) == 0 {
		return
	}
	r.bad++
	r.lc.failures++
	// PostgreSQL's wording, with the block number within the file.
	if r.bad <= 5 {
		r.warn(fmt.Sprintf("checksum verification failed in file %q, block %d: calculated %X but expected %X",
			r.name, blk-r.first, PageChecksum(&page, blk), binary.LittleEndian.Uint16(page[8:10])))
	}
	if r.bad == 5 {
		r.warn(fmt.Sprintf("further checksum verification failures in file %q will not be reported", r.name))
	}
}

func (r *localReader) warn(msg string) { r.lc.in.info.Warnings = append(r.lc.in.info.Warnings, msg) }

// finish reports what PostgreSQL reports at the end of a file.
func (r *localReader) finish() {
	if len(r.part) > 0 {
		r.warn(fmt.Sprintf("could not verify checksum in file %q, block %d: read buffer size %d and page size %d differ",
			r.name, r.block-r.first, len(r.part), PageSize))
	}
	if r.bad > 1 {
		r.warn(fmt.Sprintf("file %q has a total of %d checksum verification failures", r.name, r.bad))
	}
}

// aheadReader reads a file in a goroutine, one buffer at a time, at most
// as many buffers ahead of its reader as it was given.
type aheadReader struct {
	full chan aheadBlock
	free chan []byte
	stop chan struct{}
	done chan struct{}
	cur  []byte // unread part of the current block
	buf  []byte // the current block's buffer, given back when read
	err  error  // what ended the file
}

type aheadBlock struct {
	data, buf []byte
	err       error
}

// newAheadReader reads f into the size-byte buffers of bufs.
func newAheadReader(f *os.File, bufs []byte, size int) *aheadReader {
	n := len(bufs) / size
	a := &aheadReader{full: make(chan aheadBlock, n), free: make(chan []byte, n), stop: make(chan struct{}), done: make(chan struct{})}
	for i := range n {
		a.free <- bufs[i*size : (i+1)*size]
	}
	go a.run(f)
	return a
}

func (a *aheadReader) run(f *os.File) {
	defer close(a.done)
	for {
		var buf []byte
		select {
		case buf = <-a.free:
		case <-a.stop:
			return
		}
		n, err := f.Read(buf)
		n = max(n, 0)
		if n == 0 && err == nil {
			err = io.ErrNoProgress
		}
		select {
		case a.full <- aheadBlock{data: buf[:n], buf: buf, err: err}:
		case <-a.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// Read returns the bytes read ahead, in order, then what ended the file.
func (a *aheadReader) Read(p []byte) (int, error) {
	for len(a.cur) == 0 {
		if a.buf != nil {
			a.free <- a.buf // never blocks: free holds every buffer
			a.buf = nil
		}
		if a.err != nil {
			return 0, a.err
		}
		b := <-a.full
		a.cur, a.buf, a.err = b.data, b.buf, b.err
	}
	n := copy(p, a.cur)
	a.cur = a.cur[n:]
	return n, nil
}

// close stops the goroutine; the buffers are free again when it returns.
func (a *aheadReader) close() {
	close(a.stop)
	<-a.done
}

package backup

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// encode concatenates server messages as they travel on the wire.
func encode(t testing.TB, msgs ...pgproto3.BackendMessage) []byte {
	t.Helper()
	var out []byte
	for _, m := range msgs {
		var err error
		if out, err = m.Encode(out); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func copyMsg(kind byte, body []byte) *pgproto3.CopyData {
	return &pgproto3.CopyData{Data: append([]byte{kind}, body...)}
}

func positionSet(lsn string, tli int) []pgproto3.BackendMessage {
	return []pgproto3.BackendMessage{
		&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("recptr")}, {Name: []byte("tli")}}},
		&pgproto3.DataRow{Values: [][]byte{[]byte(lsn), []byte(fmt.Sprint(tli))}},
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT")},
	}
}

// recorder is a protocolHandler that keeps what it is given.
type recorder struct {
	start      pglogrepl.LSN
	spaces     []Tablespace
	total      int64
	archives   []string
	data       map[string][]byte
	manifest   []byte
	inManifest bool
	progress   []int64
	notices    []string
}

func (rec *recorder) handler() protocolHandler {
	rec.data = map[string][]byte{}
	cur := ""
	return protocolHandler{
		started: func(start pglogrepl.LSN, _ uint32, ts []Tablespace, total int64) error {
			rec.start, rec.spaces, rec.total = start, ts, total
			return nil
		},
		archive: func(name, _ string) error { rec.archives = append(rec.archives, name); cur = name; return nil },
		data: func(r io.Reader, n int) error {
			b := make([]byte, n)
			if _, err := io.ReadFull(r, b); err != nil {
				return err
			}
			if rec.inManifest {
				rec.manifest = append(rec.manifest, b...)
			} else {
				rec.data[cur] = append(rec.data[cur], b...)
			}
			return nil
		},
		manifest: func() error { rec.inManifest = true; return nil },
		progress: func(done int64) { rec.progress = append(rec.progress, done) },
		notice:   func(n *pgconn.Notice) { rec.notices = append(rec.notices, n.Message) },
	}
}

// exchange is a whole BASE_BACKUP answer with two archives, progress
// reports, a notice, the manifest and a checksum failure at the end.
func exchange(t testing.TB, base, ts, manifest []byte) []byte {
	var msgs []pgproto3.BackendMessage
	msgs = append(msgs, positionSet("0/2000028", 1)...)
	msgs = append(msgs,
		&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("spcoid")}, {Name: []byte("spclocation")}, {Name: []byte("size")}}},
		&pgproto3.DataRow{Values: [][]byte{[]byte("16385"), []byte("/srv/ts"), []byte("20")}},
		&pgproto3.DataRow{Values: [][]byte{nil, nil, []byte("100")}},
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT")},
		&pgproto3.CopyOutResponse{},
		copyMsg(copyNewArchive, []byte("base.tar\x00\x00")),
	)
	for len(base) > 0 { // uneven pieces, as the server's messages are
		n := min(len(base), 32768+len(msgs)%7)
		msgs = append(msgs, copyMsg(copyData, base[:n]))
		base = base[n:]
	}
	p := make([]byte, 8)
	binary.BigEndian.PutUint64(p, 102400)
	msgs = append(msgs,
		copyMsg(copyProgress, p),
		&pgproto3.NoticeResponse{Severity: "WARNING", Code: "01000", Message: "checksum verification failed in file \"./base/5/16384\", block 3"},
		copyMsg(copyNewArchive, []byte("16385.tar\x00/srv/ts\x00")),
		copyMsg(copyData, ts),
		copyMsg(copyManifest, nil),
		copyMsg(copyData, manifest[:10]),
		copyMsg(copyData, manifest[10:]),
		&pgproto3.CopyDone{},
	)
	msgs = append(msgs, positionSet("0/2000100", 1)...)
	msgs = append(msgs,
		&pgproto3.CommandComplete{CommandTag: []byte("BASE_BACKUP")},
		&pgproto3.ErrorResponse{Severity: "ERROR", Code: "XX001", Message: "checksum verification failure during base backup"},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
	)
	return encode(t, msgs...)
}

func tarOf(t testing.TB, name string, size int) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(size)})
	tw.Write(bytes.Repeat([]byte("page"), size/4))
	tw.Close()
	return b.Bytes()
}

// TestReadBaseBackup reads a whole exchange straight off the wire, also
// when every read returns a single byte, and gets every archive, the
// manifest, the positions and the checksum failure.
func TestReadBaseBackup(t *testing.T) {
	base, ts := tarOf(t, "base/5/16384", 300<<10), tarOf(t, "16385/PG_15/5/16390", 8192)
	manifest := []byte(`{ "PostgreSQL-Backup-Manifest-Version": 1 }`)
	stream := exchange(t, base, ts, manifest)
	for name, r := range map[string]io.Reader{"whole": bytes.NewReader(stream), "one byte a read": iotest.OneByteReader(bytes.NewReader(stream))} {
		t.Run(name, func(t *testing.T) {
			rec := &recorder{}
			res, err := readBaseBackup(newWire(r), rec.handler())
			if err != nil {
				t.Fatal(err)
			}
			if rec.start.String() != "0/2000028" || res.StopLSN.String() != "0/2000100" || res.StopTimeline != 1 {
				t.Errorf("positions %s..%s tli %d", rec.start, res.StopLSN, res.StopTimeline)
			}
			if len(rec.spaces) != 1 || rec.spaces[0].OID != 16385 || rec.spaces[0].Location != "/srv/ts" || rec.total != 120<<10 {
				t.Errorf("tablespaces %+v, total %d", rec.spaces, rec.total)
			}
			if fmt.Sprint(rec.archives) != "[base.tar 16385.tar]" || !bytes.Equal(rec.data["base.tar"], base) || !bytes.Equal(rec.data["16385.tar"], ts) {
				t.Errorf("archives %v: base %d bytes (want %d), ts %d (want %d)", rec.archives, len(rec.data["base.tar"]), len(base), len(rec.data["16385.tar"]), len(ts))
			}
			if !bytes.Equal(rec.manifest, manifest) {
				t.Errorf("manifest %q", rec.manifest)
			}
			if fmt.Sprint(rec.progress) != "[102400]" || len(rec.notices) != 1 || !res.ChecksumFailures {
				t.Errorf("progress %v, notices %v, checksum failures %v", rec.progress, rec.notices, res.ChecksumFailures)
			}
		})
	}
}

// TestReadBaseBackupBadStreams: a stream cut anywhere, a message with an
// absurd length, data before the COPY or an error from the server ends
// the read with an error that says so.
func TestReadBaseBackupBadStreams(t *testing.T) {
	base := tarOf(t, "PG_VERSION", 3)
	stream := exchange(t, base, tarOf(t, "x", 1), []byte("0123456789abc"))
	huge := append(encode(t, positionSet("0/1", 1)...), 'T', 0x7f, 0xff, 0xff, 0xff)
	mainOnly := []pgproto3.BackendMessage{
		&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("spcoid")}, {Name: []byte("spclocation")}, {Name: []byte("size")}}},
		&pgproto3.DataRow{Values: [][]byte{nil, nil, []byte("100")}},
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT")},
	}
	early := encode(t, append(append(positionSet("0/1", 1), mainOnly...), copyMsg(copyNewArchive, []byte("base.tar\x00\x00")))...)
	failed := encode(t, append(append(positionSet("0/1", 1), mainOnly...), &pgproto3.CopyOutResponse{},
		&pgproto3.ErrorResponse{Severity: "ERROR", Code: "53300", Message: "number of requested standby connections exceeds max_wal_senders"})...)
	tests := []struct {
		name   string
		stream []byte
		check  func(error) bool
	}{
		{"cut in a header", stream[:len(stream)/3*2+2], func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) }},
		{"cut in the archive", stream[:200], func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) }},
		{"cut before ReadyForQuery", stream[:len(stream)-6], func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) }},
		{"absurd length", huge, func(err error) bool { return errors.Is(err, errBadMessage) }},
		{"data before the COPY", early, func(err error) bool {
			return err != nil && bytes.Contains([]byte(err.Error()), []byte("before the COPY"))
		}},
		{"server error", failed, func(err error) bool {
			var pgErr *pgconn.PgError
			return errors.As(err, &pgErr) && pgErr.Code == "53300"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			_, err := readBaseBackup(newWire(bytes.NewReader(tt.stream)), rec.handler())
			if !tt.check(err) {
				t.Fatalf("error %v", err)
			}
		})
	}
}

// FuzzReadBaseBackup: whatever the server sends, reading it ends with a
// result or an error, and the handler is never asked for more archive
// bytes than a message can hold.
func FuzzReadBaseBackup(f *testing.F) {
	stream := exchange(f, tarOf(f, "PG_VERSION", 3), tarOf(f, "x", 1), []byte("0123456789abc"))
	f.Add(stream)
	f.Add(stream[:len(stream)/2])
	f.Add([]byte{'d', 0, 0, 0, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		h := (&recorder{}).handler()
		data := h.data
		h.data = func(r io.Reader, n int) error {
			if n < 0 || n > maxMessage {
				t.Fatalf("asked for %d archive bytes", n)
			}
			return data(r, n)
		}
		readBaseBackup(newWire(bytes.NewReader(b)), h)
	})
}

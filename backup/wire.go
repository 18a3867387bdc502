package backup

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"
)

// maxMessage bounds a message body: a CopyData message of a base backup
// is about 32 KiB and every other message of the exchange is small, so
// anything larger is a broken stream, not something to allocate for.
const maxMessage = 64 << 20

// errBadMessage is matched by framing errors of the wire reader.
var errBadMessage = errors.New("malformed protocol message")

// wire reads the server's messages of a BASE_BACKUP exchange straight from
// the connection. Through pgx every CopyData message was copied from its
// read buffer into the message and again into the archive block, and each
// receive set up a context watch; here the archive bytes are copied once,
// from the read buffer into the block (see runBaseBackup).
type wire struct {
	br  *bufio.Reader
	buf []byte
}

func newWire(r io.Reader) *wire {
	// One read(2) takes whatever has arrived, up to 1 MiB: a scale-100
	// backup read in 32 KiB messages made 98,309 reads through pgx
	// without a buffer and 1,663 with it.
	return &wire{br: bufio.NewReaderSize(r, 1<<20)}
}

// header reads the next message's type and body length.
func (w *wire) header() (byte, int, error) {
	var h [5]byte
	if _, err := io.ReadFull(w.br, h[:]); err != nil {
		return 0, 0, err
	}
	n := int64(binary.BigEndian.Uint32(h[1:])) - 4
	if n < 0 || n > maxMessage {
		return 0, 0, fmt.Errorf("%w: message %q of %d bytes", errBadMessage, h[0], n)
	}
	return h[0], int(n), nil
}

// body reads n bytes into a buffer that is valid until the next call.
func (w *wire) body(n int) ([]byte, error) {
	if cap(w.buf) < n {
		w.buf = make([]byte, n)
	}
	b := w.buf[:n]
	if _, err := io.ReadFull(w.br, b); err != nil {
		return nil, unexpectedEOF(err)
	}
	return b, nil
}

// next reads and decodes one whole message. Decoded messages may alias
// the buffer: they are valid until the next call.
func (w *wire) next() (pgproto3.BackendMessage, error) {
	typ, n, err := w.header()
	if err != nil {
		return nil, err
	}
	body, err := w.body(n)
	if err != nil {
		return nil, err
	}
	return decodeMessage(typ, body)
}

// decodeMessage decodes the messages a BASE_BACKUP exchange can carry.
func decodeMessage(typ byte, body []byte) (pgproto3.BackendMessage, error) {
	var msg pgproto3.BackendMessage
	switch typ {
	case 'T':
		msg = &pgproto3.RowDescription{}
	case 'D':
		msg = &pgproto3.DataRow{}
	case 'C':
		msg = &pgproto3.CommandComplete{}
	case 'H':
		msg = &pgproto3.CopyOutResponse{}
	case 'd':
		msg = &pgproto3.CopyData{}
	case 'c':
		msg = &pgproto3.CopyDone{}
	case 'N':
		msg = &pgproto3.NoticeResponse{}
	case 'E':
		msg = &pgproto3.ErrorResponse{}
	case 'Z':
		msg = &pgproto3.ReadyForQuery{}
	case 'S':
		msg = &pgproto3.ParameterStatus{}
	default:
		return nil, fmt.Errorf("%w: unexpected message type %q", errBadMessage, typ)
	}
	if err := msg.Decode(body); err != nil {
		return nil, fmt.Errorf("%w: %T: %v", errBadMessage, msg, err)
	}
	return msg, nil
}

// unexpectedEOF: a stream that ends inside a message is truncated.
func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

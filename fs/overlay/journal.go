package overlay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/pgvault/pgvault/internal/atomicfile"
)

// journal is the open journal file. Its methods are safe for concurrent
// use; append is atomic (one write), sync makes everything appended so
// far durable.
type journal struct {
	mu       sync.Mutex
	path     string
	f        *os.File
	size     int64
	unsynced bool
	noSync   bool  // the overlay is ephemeral
	flushes  int64 // fsyncs asked of the disk (Stats)
	records  int64 // records in the file
	data     int64 // of which data records (compaction drops old ones)
}

// openJournal opens (or creates) the journal at path and returns its
// records. A torn tail is cut off, so that new frames follow whole ones.
func openJournal(path string) (*journal, []record, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := atomicfile.WriteFile(path, []byte(journalMagic), atomicfile.Options{}); err != nil {
			return nil, nil, fmt.Errorf("create overlay journal: %w", err)
		}
		data = []byte(journalMagic)
	} else if err != nil {
		return nil, nil, fmt.Errorf("read overlay journal: %w", err)
	}
	recs, good, _, err := parseJournal(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open overlay journal: %w", err)
	}
	if good < len(data) {
		if err := f.Truncate(int64(good)); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("cut the torn tail of the overlay journal: %w", err)
		}
	}
	j := &journal{path: path, f: f, size: int64(good), records: int64(len(recs))}
	for _, r := range recs {
		if r.Kind == recData {
			j.data++
		}
	}
	return j, recs, nil
}

// append writes one record. On failure nothing of it stays in the file.
func (j *journal) append(r *record) error {
	frame := appendFrame(nil, encodeRecord(r))
	j.mu.Lock()
	defer j.mu.Unlock()
	n, err := j.f.WriteAt(frame, j.size)
	if err != nil {
		// A short write (disk full) must not leave a torn frame for later
		// frames to follow.
		if n > 0 {
			j.f.Truncate(j.size)
		}
		return fmt.Errorf("write overlay journal: %w", err)
	}
	j.size += int64(n)
	j.unsynced = true
	j.records++
	if r.Kind == recData {
		j.data++
	}
	return nil
}

// sync makes every record appended so far durable.
func (j *journal) sync() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.unsynced || j.noSync {
		return nil
	}
	j.flushes++
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("sync overlay journal: %w", err)
	}
	j.unsynced = false
	return nil
}

// replace atomically swaps the journal for one holding recs (compaction):
// the new file is written and synced beside the old one, renamed over it
// and the folder synced (atomicfile), so a crash leaves the old journal
// or the new one, whole.
func (j *journal) replace(recs []record) error {
	buf := bytes.NewBufferString(journalMagic)
	var data int64
	for i := range recs {
		buf.Write(appendFrame(nil, encodeRecord(&recs[i])))
		if recs[i].Kind == recData {
			data++
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := atomicfile.WriteFile(j.path, buf.Bytes(), atomicfile.Options{}); err != nil {
		return fmt.Errorf("compact overlay journal: %w", err)
	}
	f, err := os.OpenFile(j.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("reopen overlay journal: %w", err)
	}
	j.f.Close()
	j.flushes += 2 // the new file and its folder
	j.f, j.size, j.unsynced = f, int64(buf.Len()), false
	j.records, j.data = int64(len(recs)), data
	return nil
}

// readAll returns the records currently in the file.
func (j *journal) readAll() ([]record, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	data := make([]byte, j.size)
	if _, err := j.f.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read overlay journal: %w", err)
	}
	recs, _, _, err := parseJournal(data)
	return recs, err
}

func (j *journal) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	var err error
	if !j.noSync {
		j.flushes++
		err = j.f.Sync()
	}
	if cerr := j.f.Close(); err == nil {
		err = cerr
	}
	return err
}

package overlay

import (
	"cmp"
	"context"
	"fmt"
	"path/filepath"
	"slices"
)

// syncJournal makes every journal record durable, then removes the upper
// files of files whose removal is now durable.
func (ov *Overlay) syncJournal() error {
	if err := ov.j.sync(); err != nil {
		return err
	}
	ov.mu.Lock()
	doomed := ov.doomed
	ov.doomed = nil
	ov.mu.Unlock()
	for _, n := range doomed {
		n.file.dropUpper(filepath.Join(ov.upperDir, upperName(n.ino)))
	}
	return nil
}

// noteReadError counts a repository read failure and keeps the first.
func (ov *Overlay) noteReadError(err error) {
	if ov.readErrors.Add(1) == 1 {
		ov.firstErrMu.Lock()
		ov.firstErr = err.Error()
		ov.firstErrMu.Unlock()
	}
}

// Stats are an overlay's counters.
type Stats struct {
	BaseBytesRead  int64  `json:"base_bytes_read"`  // read from the snapshot (through the chunk cache)
	UpperBytesRead int64  `json:"upper_bytes_read"` // read from the scratch folder
	BytesWritten   int64  `json:"bytes_written"`
	ReadErrors     int64  `json:"read_errors"`
	FirstReadError string `json:"first_read_error,omitempty"`
	CopiedOnRead   int64  `json:"copied_on_read"` // snapshot bytes reads copied into the scratch folder
	JournalRecords int64  `json:"journal_records"`
	JournalBytes   int64  `json:"journal_bytes"`
	Compactions    int64  `json:"compactions"`
	// DiskFlushes counts the fsyncs asked of the scratch folder's disk
	// (upper files and journal): none for an ephemeral overlay.
	DiskFlushes int64 `json:"disk_flushes"`
}

// Stats returns the counters so far.
func (ov *Overlay) Stats() Stats {
	ov.firstErrMu.Lock()
	first := ov.firstErr
	ov.firstErrMu.Unlock()
	ov.j.mu.Lock()
	recs, size, flushes := ov.j.records, ov.j.size, ov.j.flushes
	ov.j.mu.Unlock()
	return Stats{BaseBytesRead: ov.baseRead.Load(), UpperBytesRead: ov.upperRead.Load(), BytesWritten: ov.written.Load(),
		CopiedOnRead: ov.cor.filled.Load(), ReadErrors: ov.readErrors.Load(), FirstReadError: first, JournalRecords: recs, JournalBytes: size,
		Compactions: ov.compactions.Load(), DiskFlushes: flushes + ov.flushes.Load()}
}

// Sync makes every change durable: all upper files and the journal.
func (ov *Overlay) Sync(ctx context.Context) error {
	for _, n := range ov.fileNodes() {
		if err := ov.persist(ctx, n); err != nil {
			return err
		}
	}
	return ov.syncJournal()
}

// fileNodes lists the file nodes in inode order, so that Compact takes
// their locks in one order.
func (ov *Overlay) fileNodes() []*Node {
	ov.mu.Lock()
	defer ov.mu.Unlock()
	out := make([]*Node, 0, len(ov.nodes))
	for _, n := range ov.nodes {
		if n.kind == KindFile {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b *Node) int { return cmp.Compare(a.ino, b.ino) })
	return out
}

// Compact rewrites the journal: namespace records stay as they are, the
// block-map records of each file are replaced by one record of its
// current, synced state. The new journal replaces the old one atomically
// (internal/atomicfile). Every file lock is held meanwhile, so no record
// can go to the old journal after it was read.
func (ov *Overlay) Compact(ctx context.Context) error {
	files := ov.fileNodes()
	for _, n := range files {
		n.file.mu.Lock()
	}
	defer func() {
		for _, n := range files {
			n.file.mu.Unlock()
		}
	}()
	for _, n := range files {
		if err := ov.syncUpperLocked(n.file); err != nil {
			return fmt.Errorf("compact overlay journal: %w", err)
		}
	}
	ov.mu.Lock()
	defer ov.mu.Unlock()
	old, err := ov.j.readAll()
	if err != nil {
		return err
	}
	recs := make([]record, 0, len(old))
	for _, r := range old {
		if r.Kind != recData {
			recs = append(recs, r)
		}
	}
	for _, n := range files {
		f := n.file
		if n.removed || (n.base == nil && f.local && !cloned(f)) {
			continue // created files are whole in the overlay from their create record on
		}
		if f.local {
			recs = append(recs, record{Kind: recData, Node: n.ref(), Flags: dataLocal, Size: f.sizeLocked(), MTime: n.mtime.Load()})
			continue
		}
		if bs := baseSize(n); f.present.empty() && f.size == bs && f.baseLimit == bs {
			continue
		}
		recs = append(recs, record{Kind: recData, Node: n.ref(), Flags: dataAbsolute, Size: f.size, BaseLimit: f.baseLimit,
			MTime: n.mtime.Load(), Ranges: f.present.ranges()})
	}
	if err := ov.j.replace(recs); err != nil {
		return err
	}
	for _, n := range files {
		n.file.dirty, n.file.metaDirty = nil, false
	}
	ov.compactions.Add(1)
	return nil
}

// cloned reports whether a clone record made f a copy of WAL (records
// after it describe the file as it is now).
func cloned(f *fileState) bool {
	f.baseMu.Lock()
	defer f.baseMu.Unlock()
	return f.clone != nil
}

// Close makes everything durable, compacts the journal and releases the
// scratch folder. Only the first call does anything; nothing may use the
// overlay after it.
func (ov *Overlay) Close(ctx context.Context) error {
	var err error
	ov.closeOnce.Do(func() {
		ov.stopCopyOnRead()
		if !ov.ephemeral {
			err = ov.Sync(ctx)
			if err == nil {
				err = ov.Compact(ctx)
			}
		}
		for _, n := range ov.fileNodes() {
			n.file.closeUpper()
		}
		ov.mu.Lock()
		doomed := ov.doomed
		ov.doomed = nil
		ov.mu.Unlock()
		for _, n := range doomed {
			n.file.dropUpper(filepath.Join(ov.upperDir, upperName(n.ino)))
		}
		if cerr := ov.j.close(); err == nil {
			err = cerr
		}
		ov.lock.Close()
	})
	return err
}

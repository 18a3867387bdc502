package backup

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
)

// Errors PlanRestore wraps; cmd/pgvault explains them in one line.
var (
	// ErrNoBackup: no base backup can reach the target (none at all, none
	// on the target timeline, or the target is before the earliest one).
	ErrNoBackup = errors.New("no base backup can reach the target")
	// ErrTargetTooEarly: the target lies before the earliest point any
	// backup can be restored to (the end of the oldest usable backup).
	ErrTargetTooEarly = errors.New("the target is before the earliest restorable point")
	// ErrBackupUnusable: the backup named explicitly cannot reach the
	// target (wrong timeline, or it ends after the target).
	ErrBackupUnusable = errors.New("the backup cannot reach the target")
	// ErrWALMissing: a WAL segment recovery needs is not in the repository.
	ErrWALMissing = errors.New("WAL needed for recovery is missing from the repository")
	// ErrTargetBeyondArchive: the target lies after the newest WAL in the
	// repository.
	ErrTargetBeyondArchive = errors.New("the target is after the newest WAL in the repository")
)

// planError is an error of one of the kinds above whose message is
// complete by itself (it does not repeat the kind's text).
type planError struct {
	kind error
	msg  string
}

func (e *planError) Error() string { return e.msg }
func (e *planError) Unwrap() error { return e.kind }

func planErrorf(kind error, format string, args ...any) error {
	return &planError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// PlanBackup is one base backup as the planner sees it.
type PlanBackup struct {
	ID    string
	Label string
	Info  *Info
}

// PlanInput is everything PlanRestore decides from. It is plain data, so
// plans are reproducible (and golden-tested).
type PlanInput struct {
	// Backups are the repository's base backups, in any order.
	Backups []PlanBackup
	// WAL is the WAL catalogue listing (repo.ListWAL).
	WAL []repo.WALEntry
	// Histories holds the content of every timeline history file in the
	// catalogue ("0000000N.history" of timeline N), by timeline.
	Histories map[uint32][]byte
	// Ref names the backup: "" or "latest" lets the planner choose, else a
	// backup ID or a unique prefix of one.
	Ref string
	// Target is where recovery stops.
	Target wal.Target
	// Timeline is recovery_target_timeline.
	Timeline wal.TimelineGoal
	// Standby plans a standby: WAL after the backup's end is replayed
	// while it lasts and then streamed from the primary, so a gap after
	// consistency is a note, not an error.
	Standby bool
	// FilesOnly plans a copy of the files without recovery configuration:
	// only the backup is chosen, no WAL is checked.
	FilesOnly bool
}

// RestorePlan says which backup a restore uses and which WAL recovery
// will read. It is computed before anything is written.
type RestorePlan struct {
	Backup PlanBackup
	// Chosen says why this backup: "given" (named by ID) or how the
	// planner picked it.
	Chosen string
	Target wal.Target
	// TimelineGoal is recovery_target_timeline; Timeline is the timeline
	// it resolves to with this archive (PostgreSQL's findNewestTimeLine).
	TimelineGoal wal.TimelineGoal
	Timeline     uint32
	SegmentSize  uint64
	// HistoryFiles are the timeline history files recovery reads.
	HistoryFiles []string
	// WAL lists the segments recovery reads from the archive, one run per
	// timeline, in LSN order (empty for FilesOnly).
	WAL []wal.SegmentRange
	// Segments and Bytes count WAL; Bytes counts whole segments.
	Segments int
	Bytes    int64
	// Partial lists segments only the streamer's ".partial" file holds;
	// `wal fetch` serves them zero-padded.
	Partial []string
	// ConsistentAt is where the restored server reaches consistency (the
	// backup's stop LSN).
	ConsistentAt pglogrepl.LSN
	// ArchiveEnd is the newest restorable point along the timeline: the
	// end of the last segment of the unbroken WAL run from the backup
	// (0 for FilesOnly). ArchiveEndStored is when that segment was stored.
	ArchiveEnd       pglogrepl.LSN
	ArchiveEndStored time.Time
	// Notes are facts the operator should know (shown with the plan).
	Notes []string
}

// FirstSegment and LastSegment name the first and last WAL segment of
// the plan ("" when it reads no WAL).
func (p *RestorePlan) FirstSegment() string {
	if len(p.WAL) == 0 {
		return ""
	}
	r := p.WAL[0]
	return wal.Segment{Timeline: r.Timeline, No: r.First}.Name(p.SegmentSize)
}

// LastSegment names the last WAL segment of the plan.
func (p *RestorePlan) LastSegment() string {
	if len(p.WAL) == 0 {
		return ""
	}
	r := p.WAL[len(p.WAL)-1]
	return wal.Segment{Timeline: r.Timeline, No: r.Last}.Name(p.SegmentSize)
}

// MarshalJSON writes the plan as one stable document; LSNs and segment
// names are in PostgreSQL's text forms.
func (p *RestorePlan) MarshalJSON() ([]byte, error) {
	type run struct {
		Timeline uint32 `json:"timeline"`
		First    string `json:"first"`
		Last     string `json:"last"`
		Segments uint64 `json:"segments"`
	}
	runs := []run{}
	for _, r := range p.WAL {
		runs = append(runs, run{r.Timeline, wal.Segment{Timeline: r.Timeline, No: r.First}.Name(p.SegmentSize),
			wal.Segment{Timeline: r.Timeline, No: r.Last}.Name(p.SegmentSize), r.Len()})
	}
	info := p.Backup.Info
	doc := struct {
		Backup struct {
			ID         string    `json:"id"`
			Label      string    `json:"label"`
			Timeline   uint32    `json:"timeline"`
			StartLSN   string    `json:"start_lsn"`
			StopLSN    string    `json:"stop_lsn"`
			StartTime  time.Time `json:"start_time"`
			StopTime   time.Time `json:"stop_time"`
			Standalone bool      `json:"standalone"`
		} `json:"backup"`
		Chosen           string     `json:"chosen"`
		Target           wal.Target `json:"target"`
		TimelineGoal     string     `json:"timeline_goal"`
		Timeline         uint32     `json:"timeline"`
		SegmentSize      uint64     `json:"segment_size"`
		HistoryFiles     []string   `json:"history_files"`
		WAL              []run      `json:"wal"`
		FirstSegment     string     `json:"first_segment"`
		LastSegment      string     `json:"last_segment"`
		Segments         int        `json:"segments"`
		Bytes            int64      `json:"bytes"`
		Partial          []string   `json:"partial_segments"`
		ConsistentAt     string     `json:"consistent_at"`
		ArchiveEnd       string     `json:"archive_end,omitempty"`
		ArchiveEndStored *time.Time `json:"archive_end_stored,omitempty"`
		Notes            []string   `json:"notes"`
	}{
		Chosen: p.Chosen, Target: p.Target, TimelineGoal: p.TimelineGoal.String(), Timeline: p.Timeline,
		SegmentSize: p.SegmentSize, HistoryFiles: nonNil(p.HistoryFiles), WAL: runs,
		FirstSegment: p.FirstSegment(), LastSegment: p.LastSegment(), Segments: p.Segments, Bytes: p.Bytes,
		Partial: nonNil(p.Partial), ConsistentAt: p.ConsistentAt.String(), Notes: nonNil(p.Notes),
	}
	doc.Backup.ID, doc.Backup.Label = p.Backup.ID, p.Backup.Label
	doc.Backup.Timeline, doc.Backup.StartLSN, doc.Backup.StopLSN = info.Timeline, info.StartLSN.String(), info.StopLSN.String()
	doc.Backup.StartTime, doc.Backup.StopTime, doc.Backup.Standalone = info.StartTime, info.StopTime, info.Standalone
	if p.ArchiveEnd != 0 {
		doc.ArchiveEnd = p.ArchiveEnd.String()
	}
	if !p.ArchiveEndStored.IsZero() {
		t := p.ArchiveEndStored
		doc.ArchiveEndStored = &t
	}
	return json.Marshal(doc)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// shortID is the 8-digit form of a backup ID used in messages.
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// startWAL matches backup_label's "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)".
var startWAL = regexp.MustCompile(`(?m)^START WAL LOCATION: ([0-9A-Fa-f]+/[0-9A-Fa-f]+) \(file ([0-9A-F]{24})\)`)

// SegmentSizeOf is the WAL segment size of the cluster a backup came
// from: as recorded at backup time (Info.WALSegmentSize), or else worked
// out from its backup_label: the one segment size for which the start LSN
// lies in the file the label names. When several sizes fit (a start LSN in
// the first MiB of a 4 GiB stretch) or the label says nothing, it is
// wal.DefaultSegmentSize.
func SegmentSizeOf(info *Info) uint64 {
	if info.WALSegmentSize != 0 && wal.ValidSegmentSize(info.WALSegmentSize) {
		return info.WALSegmentSize
	}
	m := startWAL.FindStringSubmatch(info.BackupLabel)
	if m == nil {
		return wal.DefaultSegmentSize
	}
	lsn, err := pglogrepl.ParseLSN(m[1])
	if err != nil {
		return wal.DefaultSegmentSize
	}
	var fits []uint64
	for size := wal.MinSegmentSize; size <= wal.MaxSegmentSize; size <<= 1 {
		seg, err := wal.ParseSegment(m[2], size)
		if err == nil && wal.SegmentNo(lsn, size) == seg.No {
			fits = append(fits, size)
		}
	}
	if len(fits) == 1 {
		return fits[0]
	}
	return wal.DefaultSegmentSize
}

// PlanRestore decides, without any I/O, which backup a restore uses and
// which WAL recovery reads:
//
//   - Ref "" or "latest": the newest backup that ends before the target
//     (stop time for a time target, stop LSN for an LSN target) and whose
//     timeline is, at the backup's start and stop, the one the target
//     timeline's history holds there (wal.TimelineOf). For xid, name and
//     immediate targets and for no target it is the newest backup on the
//     timeline: where an xid or a restore point lies cannot be known
//     before replay, so name an older backup if the point is older.
//   - An explicit ID is used as given, and checked the same way.
//   - The WAL runs from the backup's start LSN to the target LSN, to the
//     backup's end for an immediate target, and to the end of the archive
//     along the target timeline otherwise (wal.RequiredSegments). A
//     missing segment is ErrWALMissing, naming it and the newest
//     restorable point. A time target may stop at a gap if WAL stored
//     after the target time precedes the gap.
func PlanRestore(in PlanInput) (*RestorePlan, error) {
	if err := in.Target.Validate(); err != nil {
		return nil, err
	}
	if len(in.Backups) == 0 {
		return nil, planErrorf(ErrNoBackup, "the repository has no base backups (take one with `pgvault backup`)")
	}
	pl := &planner{in: in, histories: map[uint32][]wal.HistoryEntry{}}
	var b *PlanBackup
	chosen := "given"
	switch {
	case (in.Ref == "" || in.Ref == "latest") && in.FilesOnly:
		b, chosen = pl.newest(), "the newest backup"
	case in.Ref == "" || in.Ref == "latest":
		var err error
		if b, chosen, err = pl.choose(); err != nil {
			return nil, err
		}
	case in.FilesOnly:
		var err error
		if b, err = pl.resolve(in.Ref); err != nil {
			return nil, err
		}
	default:
		var err error
		if b, err = pl.resolve(in.Ref); err != nil {
			return nil, err
		}
		if err := pl.check(b); err != nil {
			if errors.Is(err, wal.ErrInvalidHistory) {
				return nil, err
			}
			return nil, planErrorf(ErrBackupUnusable, "%v", err)
		}
	}
	return pl.plan(b, chosen)
}

type planner struct {
	in        PlanInput
	histories map[uint32][]wal.HistoryEntry
}

// history returns the parsed history of timeline tli (nil for a timeline
// without a history file: no parents, as PostgreSQL assumes).
func (pl *planner) history(tli uint32) ([]wal.HistoryEntry, error) {
	if h, ok := pl.histories[tli]; ok {
		return h, nil
	}
	data, ok := pl.in.Histories[tli]
	if !ok {
		return nil, nil
	}
	h, err := wal.ParseHistory(data)
	if err != nil {
		return nil, fmt.Errorf("timeline history file %s: %w", wal.HistoryFileName(tli), err)
	}
	pl.histories[tli] = h
	return h, nil
}

func (pl *planner) hasHistory(tli uint32) bool {
	_, ok := pl.in.Histories[tli]
	return ok
}

// targetTimeline is the timeline recovery from b follows, and its history.
func (pl *planner) targetTimeline(b *PlanBackup) (uint32, []wal.HistoryEntry, error) {
	tli := pl.in.Timeline.Resolve(b.Info.Timeline, pl.hasHistory)
	// Without its history file PostgreSQL takes a timeline to have no
	// parents, so a backup on an older timeline cannot reach it.
	if tli > b.Info.Timeline && !pl.hasHistory(tli) {
		return 0, nil, fmt.Errorf("timeline %d has no history file (%s) in the repository, so recovery cannot follow it from backup %s on timeline %d",
			tli, wal.HistoryFileName(tli), shortID(b.ID), b.Info.Timeline)
	}
	h, err := pl.history(tli)
	return tli, h, err
}

// onTimeline checks that b's WAL is part of timeline tli's history.
func (pl *planner) onTimeline(b *PlanBackup, tli uint32, h []wal.HistoryEntry) error {
	info := b.Info
	stopTLI := info.StopTimeline
	if stopTLI == 0 {
		stopTLI = info.Timeline
	}
	last := info.StartLSN
	if info.StopLSN > info.StartLSN {
		last = info.StopLSN - 1
	}
	for _, pt := range []struct {
		lsn pglogrepl.LSN
		tli uint32
	}{{info.StartLSN, info.Timeline}, {last, stopTLI}} {
		got, err := wal.TimelineOf(h, tli, pt.lsn)
		if err != nil {
			return fmt.Errorf("backup %s is not on timeline %d: %w", shortID(b.ID), tli, err)
		}
		if got != pt.tli {
			return fmt.Errorf("backup %s (timeline %d, %s..%s) is not in the history of timeline %d: at %s that history holds WAL of timeline %d%s",
				shortID(b.ID), info.Timeline, info.StartLSN, info.StopLSN, tli, pt.lsn, got, forkHint(h, pt.tli))
		}
	}
	return nil
}

// forkHint says where timeline tli ends in a history, if it does.
func forkHint(h []wal.HistoryEntry, tli uint32) string {
	for _, e := range h {
		if e.Timeline == tli {
			return fmt.Sprintf(" (timeline %d was left at %s; use --timeline %d or --timeline current to stay on it)", tli, e.SwitchLSN, tli)
		}
	}
	return ""
}

// beforeTarget checks that b ends before a time or LSN target.
func (pl *planner) beforeTarget(b *PlanBackup) error {
	t, info := pl.in.Target, b.Info
	switch t.Kind {
	case wal.TargetTime:
		if info.StopTime.After(t.Time) {
			return fmt.Errorf("backup %s ended at %s, after the target time %s", shortID(b.ID), fmtTime(info.StopTime), fmtTime(t.Time))
		}
	case wal.TargetLSN:
		if info.StopLSN > t.LSN {
			return fmt.Errorf("backup %s ended at LSN %s, after the target LSN %s", shortID(b.ID), info.StopLSN, t.LSN)
		}
	}
	return nil
}

// check validates an explicitly named backup.
func (pl *planner) check(b *PlanBackup) error {
	tli, h, err := pl.targetTimeline(b)
	if err != nil {
		return err
	}
	if err := pl.onTimeline(b, tli, h); err != nil {
		return err
	}
	return pl.beforeTarget(b)
}

func fmtTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000000Z") }

// resolve finds the backup a full ID or unique prefix names.
func (pl *planner) resolve(ref string) (*PlanBackup, error) {
	var found *PlanBackup
	for i := range pl.in.Backups {
		b := &pl.in.Backups[i]
		if b.ID == ref {
			return b, nil
		}
		if strings.HasPrefix(b.ID, ref) {
			if found != nil {
				return nil, fmt.Errorf("%q: %w", ref, repo.ErrAmbiguousSnapshot)
			}
			found = b
		}
	}
	if found == nil {
		return nil, fmt.Errorf("backup %q: %w", ref, repo.ErrSnapshotNotFound)
	}
	return found, nil
}

// newest is the backup that ended last.
func (pl *planner) newest() *PlanBackup {
	return pl.byAge()[0]
}

// byAge lists the backups newest first: by stop time, then stop LSN.
func (pl *planner) byAge() []*PlanBackup {
	order := make([]*PlanBackup, len(pl.in.Backups))
	for i := range pl.in.Backups {
		order[i] = &pl.in.Backups[i]
	}
	slices.SortStableFunc(order, func(x, y *PlanBackup) int {
		a, b := x.Info, y.Info
		return cmp.Or(b.StopTime.Compare(a.StopTime), cmp.Compare(b.StopLSN, a.StopLSN), strings.Compare(y.ID, x.ID))
	})
	return order
}

// choose picks the newest usable backup.
func (pl *planner) choose() (*PlanBackup, string, error) {
	order := pl.byAge()
	var onTL []*PlanBackup // usable on the timeline, newest first
	var firstErr error
	for _, b := range order {
		tli, h, err := pl.targetTimeline(b)
		if err == nil {
			err = pl.onTimeline(b, tli, h)
		}
		if errors.Is(err, wal.ErrInvalidHistory) {
			return nil, "", err
		}
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		onTL = append(onTL, b)
		if pl.beforeTarget(b) == nil {
			how := fmt.Sprintf("the newest backup on timeline %d's history", tli)
			switch pl.in.Target.Kind {
			case wal.TargetTime:
				how += " that ends before the target time"
			case wal.TargetLSN:
				how += " that ends before the target LSN"
			}
			return b, how, nil
		}
	}
	if len(onTL) == 0 {
		return nil, "", planErrorf(ErrNoBackup, "no backup is on the target timeline (%s): %v", pl.in.Timeline, firstErr)
	}
	oldest := onTL[len(onTL)-1]
	for _, b := range onTL { // the earliest end, by the target's measure
		if pl.in.Target.Kind == wal.TargetLSN && b.Info.StopLSN < oldest.Info.StopLSN {
			oldest = b
		}
	}
	i := oldest.Info
	if pl.in.Target.Kind == wal.TargetLSN {
		return nil, "", planErrorf(ErrTargetTooEarly, "the target LSN %s is before the earliest restorable point, LSN %s (the end of backup %s, %s)", pl.in.Target.LSN, i.StopLSN, shortID(oldest.ID), fmtTime(i.StopTime))
	}
	return nil, "", planErrorf(ErrTargetTooEarly, "the target time %s is before the earliest restorable point, %s (the end of backup %s, LSN %s)", fmtTime(pl.in.Target.Time), fmtTime(i.StopTime), shortID(oldest.ID), i.StopLSN)
}

// walFile is a segment the catalogue holds.
type walFile struct {
	partial bool
	stored  time.Time
}

func (pl *planner) plan(b *PlanBackup, chosen string) (*RestorePlan, error) {
	info := b.Info
	segSize := SegmentSizeOf(info)
	p := &RestorePlan{
		Backup: *b, Chosen: chosen, Target: pl.in.Target, TimelineGoal: pl.in.Timeline, Timeline: info.Timeline,
		SegmentSize: segSize, ConsistentAt: info.StopLSN,
	}
	if pl.in.FilesOnly {
		if !info.Standalone {
			p.Notes = append(p.Notes, "no recovery configuration: this backup is not standalone, so PostgreSQL needs WAL from "+
				info.StartLSN.String()+" to "+info.StopLSN.String()+" (restore_command) to start on it")
		}
		return p, nil
	}
	tli, h, err := pl.targetTimeline(b)
	if err != nil {
		return nil, err
	}
	p.Timeline = tli
	if pl.hasHistory(tli) {
		p.HistoryFiles = []string{wal.HistoryFileName(tli)}
	}

	ranges, err := wal.Ancestors(h, tli)
	if err != nil {
		return nil, fmt.Errorf("timeline %d: %w", tli, err)
	}
	// The catalogue's segments, and the newest one on the path: a segment
	// of an ancestor timeline past the point where the history left it
	// (the old primary went on writing) is not on the path.
	files := map[wal.Segment]walFile{}
	var newest uint64
	for _, e := range pl.in.WAL {
		f, err := wal.ParseFileName(e.Name, segSize)
		if err != nil || (f.Kind != wal.KindSegment && f.Kind != wal.KindPartial) {
			continue
		}
		s := f.Segment()
		old, seen := files[s]
		switch {
		case !seen, f.Kind == wal.KindSegment && old.partial:
			files[s] = walFile{partial: f.Kind == wal.KindPartial, stored: e.ModTime}
		case f.Kind == old.kind() && e.ModTime.After(old.stored):
			files[s] = walFile{partial: old.partial, stored: e.ModTime}
		}
		if pathTimeline(ranges, s.No, segSize) == s.Timeline && s.No > newest {
			newest = s.No
		}
	}

	// The WAL that makes the backup consistent, then the rest of the way.
	consistentEnd := info.StartLSN
	if info.StopLSN > info.StartLSN {
		consistentEnd = info.StopLSN - 1
	}
	consistentSeg := wal.SegmentNo(consistentEnd, segSize)
	stop := consistentEnd
	switch pl.in.Target.Kind {
	case wal.TargetLSN:
		stop = max(stop, pl.in.Target.LSN)
	case wal.TargetImmediate:
	default: // time, xid, name, end: as far as the archive goes
		stop = max(stop, wal.Segment{No: newest}.Start(segSize))
	}
	path, err := wal.RequiredSegments(h, tli, info.Timeline, info.StartLSN, stop, segSize)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", shortID(b.ID), err)
	}
	var segs []wal.Segment
	for _, r := range path {
		segs = append(segs, r.Segments()...)
	}

	// The unbroken run of WAL from the backup's start. A standalone
	// backup's pg_wal holds the WAL up to consistency.
	avail := func(s wal.Segment) bool {
		_, ok := files[s]
		return ok || (info.Standalone && s.No <= consistentSeg)
	}
	run := 0
	var newestStored time.Time
	for run < len(segs) && avail(segs[run]) {
		if f := files[segs[run]]; f.stored.After(newestStored) {
			newestStored = f.stored
		}
		run++
	}
	if run > 0 {
		p.ArchiveEnd = segs[run-1].Next().Start(segSize)
		p.ArchiveEndStored = newestStored
	}
	need := len(segs)
	if run < need {
		missing := segs[run]
		switch {
		case missing.No <= consistentSeg:
			return nil, planErrorf(ErrWALMissing, "WAL segment %s needed to make backup %s consistent (up to its stop LSN %s) is missing from the repository; archive WAL with `pgvault wal push` or `pgvault wal stream`, or restore with --no-recovery-config for a copy of the files only", missing.Name(segSize), shortID(b.ID), info.StopLSN)
		case pl.in.Standby:
			p.Notes = append(p.Notes, fmt.Sprintf("WAL segment %s is missing from the repository: the standby replays the archive up to %s, then streams from the primary (which must still have that WAL)",
				missing.Name(segSize), p.restorable()))
			need = run
		case pl.in.Target.Kind == wal.TargetTime && !newestStored.IsZero() && !newestStored.Before(pl.in.Target.Time):
			// WAL stored after the target time comes before the gap:
			// recovery meets the target before it.
			p.Notes = append(p.Notes, fmt.Sprintf("WAL segment %s is missing, but WAL stored at %s (after the target time) precedes it, so recovery should not need it",
				missing.Name(segSize), fmtTime(newestStored)))
			need = run
		default:
			return nil, planErrorf(ErrWALMissing, "WAL segment %s needed to reach the target (%s) is missing from the repository; the newest restorable point is %s", missing.Name(segSize), pl.in.Target, p.restorable())
		}
	}
	if pl.in.Target.Kind == wal.TargetTime && run == len(segs) && !newestStored.IsZero() && newestStored.Before(pl.in.Target.Time) {
		return nil, planErrorf(ErrTargetBeyondArchive, "the target time %s is after the newest WAL stored along timeline %d (segment %s, stored %s), so recovery would end before reaching it; the newest restorable point is %s: wait for archiving (SELECT pg_switch_wal() on the server) or restore without --to", fmtTime(pl.in.Target.Time), tli, segs[len(segs)-1].Name(segSize), fmtTime(newestStored), p.restorable())
	}
	var fetched []wal.Segment // what recovery reads from the archive
	for _, s := range segs[:need] {
		f, ok := files[s]
		if !ok {
			continue // in the standalone backup's pg_wal
		}
		fetched = append(fetched, s)
		if f.partial {
			p.Partial = append(p.Partial, s.PartialName(segSize))
		}
	}
	p.WAL = runsOf(fetched)
	p.Segments = len(fetched)
	p.Bytes = int64(len(fetched)) * int64(segSize)
	if info.Standalone {
		p.Notes = append(p.Notes, "standalone backup: its pg_wal holds the WAL up to "+info.StopLSN.String())
	}
	switch pl.in.Target.Kind {
	case wal.TargetTime:
		p.Notes = append(p.Notes, "recovery stops at the first commit after the target time; the WAL listed runs to the end of the archive and is read only as far as needed")
	case wal.TargetXID, wal.TargetName:
		p.Notes = append(p.Notes, fmt.Sprintf("where %s lies is only known during replay: if it is older than backup %s (ended %s), restore an older backup by ID",
			pl.in.Target, shortID(b.ID), fmtTime(info.StopTime)))
	}
	var crossed []string
	for _, r := range path {
		crossed = append(crossed, fmt.Sprintf("timeline %d from %s", r.Timeline, wal.Segment{Timeline: r.Timeline, No: r.First}.Name(segSize)))
	}
	if len(path) > 1 {
		p.Notes = append(p.Notes, "recovery crosses timelines: "+strings.Join(crossed, ", "))
	}
	return p, nil
}

func (f walFile) kind() wal.FileKind {
	if f.partial {
		return wal.KindPartial
	}
	return wal.KindSegment
}

// pathTimeline is the timeline whose file of segment no recovery along
// ranges reads: the newest timeline that begins in or before it, as
// wal.RequiredSegments decides.
func pathTimeline(ranges []wal.TimelineRange, no, segSize uint64) uint32 {
	tli := ranges[0].Timeline
	for _, r := range ranges {
		if (r.Open() || r.Begin < r.End) && uint64(r.Begin)/segSize <= no {
			tli = r.Timeline
		}
	}
	return tli
}

// restorable describes the newest restorable point.
func (p *RestorePlan) restorable() string {
	if p.ArchiveEnd == 0 {
		return "none: no WAL of the backup is stored"
	}
	s := "LSN " + p.ArchiveEnd.String()
	if !p.ArchiveEndStored.IsZero() {
		s += fmt.Sprintf(" (WAL stored %s)", fmtTime(p.ArchiveEndStored))
	}
	return s
}

// runsOf groups consecutive segments of one timeline.
func runsOf(segs []wal.Segment) []wal.SegmentRange {
	var out []wal.SegmentRange
	for _, s := range segs {
		if n := len(out); n > 0 && out[n-1].Timeline == s.Timeline && out[n-1].Last+1 == s.No {
			out[n-1].Last = s.No
			continue
		}
		out = append(out, wal.SegmentRange{Timeline: s.Timeline, First: s.No, Last: s.No})
	}
	return out
}

package agent

import "time"

// Clock tells the time; tests inject a fake one.
type Clock interface {
	Now() time.Time
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Schedule says when base backups are due, as pghoard's
// basebackup_interval_hours, basebackup_hour and basebackup_minute do.
//
// Without Hour and Minute (-1) the next backup is due Interval after the
// start of the last one. With them, backups are due at fixed slots: the
// times Hour:Minute UTC plus any whole number of intervals (for an
// interval that divides 24 hours: Hour, Hour+Interval, ... every day, so
// 6 hours and hour 1 give 01, 07, 13 and 19). A slot whose backup was
// missed (the agent was down) is made up at once. A site without any
// backup is due at once. Interval 0 means never.
type Schedule struct {
	Interval     time.Duration
	Hour, Minute int
}

// Aligned reports whether backups are aligned to hour:minute slots.
func (s Schedule) Aligned() bool { return s.Hour >= 0 && s.Minute >= 0 }

// Next returns when the next backup is due, given the start of the last
// one (zero: none yet) and the time now. A result at or before now means
// "due now". ok is false when backups are never due (Interval 0).
func (s Schedule) Next(last, now time.Time) (next time.Time, ok bool) {
	if s.Interval <= 0 {
		return time.Time{}, false
	}
	if last.IsZero() {
		return now, true
	}
	if !s.Aligned() {
		return last.Add(s.Interval), true
	}
	prev := s.slotAtOrBefore(now)
	if last.Before(prev) {
		return now, true // the slot at prev was missed
	}
	return prev.Add(s.Interval), true
}

// slotAtOrBefore is the newest slot not after t.
func (s Schedule) slotAtOrBefore(t time.Time) time.Time {
	anchor := time.Date(1970, 1, 1, s.Hour, s.Minute, 0, 0, time.UTC)
	since := t.Sub(anchor)
	n := since / s.Interval
	if since < 0 && since%s.Interval != 0 {
		n--
	}
	return anchor.Add(n * s.Interval)
}

// every is the plain interval rule of the other jobs (retention, WAL
// check, drills): due interval after the last run, at once when there was
// none; never for interval 0.
func every(interval time.Duration, last, now time.Time) (time.Time, bool) {
	return Schedule{Interval: interval, Hour: -1, Minute: -1}.Next(last, now)
}

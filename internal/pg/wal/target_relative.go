package wal

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseTargetTimeAt reads a recovery target time as ParseTargetTime does,
// and also relative to now, as an operator says it at 3 am: "now",
// "5 minutes ago", "1 hour 30 minutes ago", "90m ago", "today 14:00",
// "yesterday 23:15:30", "yesterday" (midnight). Day names are read in loc
// (nil: UTC).
func ParseTargetTimeAt(s string, loc *time.Location, now time.Time) (time.Time, error) {
	if loc == nil {
		loc = time.UTC
	}
	fields := strings.Fields(strings.ToLower(s))
	switch {
	case len(fields) == 1 && fields[0] == "now":
		return now.Truncate(time.Microsecond), nil
	case len(fields) >= 2 && fields[len(fields)-1] == "ago":
		d, err := parseAgo(fields[:len(fields)-1])
		if err != nil {
			return time.Time{}, fmt.Errorf("%w: time %q: %v", ErrInvalidTarget, s, err)
		}
		return now.Add(-d).Truncate(time.Microsecond), nil
	case len(fields) >= 1 && len(fields) <= 2 && (fields[0] == "today" || fields[0] == "yesterday"):
		day := now.In(loc)
		if fields[0] == "yesterday" {
			day = day.AddDate(0, 0, -1)
		}
		clock := "00:00:00"
		if len(fields) == 2 {
			clock = fields[1]
		}
		return parseClockOn(s, day, clock, loc)
	}
	return ParseTargetTime(s, loc)
}

// parseClockOn is day at clock (HH:MM or HH:MM:SS) in loc.
func parseClockOn(s string, day time.Time, clock string, loc *time.Location) (time.Time, error) {
	for _, layout := range []string{"15:04:05", "15:04"} {
		if c, err := time.Parse(layout, clock); err == nil {
			y, m, d := day.Date()
			return time.Date(y, m, d, c.Hour(), c.Minute(), c.Second(), 0, loc), nil
		}
	}
	return time.Time{}, fmt.Errorf("%w: time %q: after today or yesterday give a clock time, 14:00 or 14:00:30", ErrInvalidTarget, s)
}

var agoUnits = map[string]time.Duration{
	"s": time.Second, "sec": time.Second, "secs": time.Second, "second": time.Second, "seconds": time.Second,
	"m": time.Minute, "min": time.Minute, "mins": time.Minute, "minute": time.Minute, "minutes": time.Minute,
	"h": time.Hour, "hour": time.Hour, "hours": time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour,
	"w": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour, "weeks": 7 * 24 * time.Hour,
}

// parseAgo reads the span before "ago": number-unit pairs ("1 hour 30
// minutes", "2 days") or a Go duration ("90m", "1h30m").
func parseAgo(fields []string) (time.Duration, error) {
	const hint = `say it as "5 minutes ago", "1 hour 30 minutes ago" or "90m ago"`
	if len(fields) == 1 {
		d, err := time.ParseDuration(fields[0])
		if err != nil || d <= 0 {
			return 0, fmt.Errorf("%q is not a span of time: %s", fields[0], hint)
		}
		return d, nil
	}
	if len(fields)%2 != 0 {
		return 0, fmt.Errorf("%s", hint)
	}
	var total time.Duration
	for i := 0; i < len(fields); i += 2 {
		n, err := strconv.ParseUint(fields[i], 10, 32)
		unit, ok := agoUnits[fields[i+1]]
		if err != nil || !ok {
			return 0, fmt.Errorf("%q %q: %s", fields[i], fields[i+1], hint)
		}
		total += time.Duration(n) * unit
	}
	if total <= 0 {
		return 0, fmt.Errorf("a span of zero: %s", hint)
	}
	return total, nil
}

package agent

import (
	"testing"
	"time"
)

func ts(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04:05", s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestScheduleNext(t *testing.T) {
	daily := Schedule{Interval: 24 * time.Hour, Hour: -1, Minute: -1}
	sixAt1 := Schedule{Interval: 6 * time.Hour, Hour: 1, Minute: 0}
	dailyAt0230 := Schedule{Interval: 24 * time.Hour, Hour: 2, Minute: 30}
	tests := []struct {
		name      string
		s         Schedule
		last, now string // "" = no backup yet
		want      string // "" = never
	}{
		{"no backup yet: at once", daily, "", "2024-05-01 10:37:00", "2024-05-01 10:37:00"},
		{"interval after the last start", daily, "2024-05-01 10:00:00", "2024-05-01 12:00:00", "2024-05-02 10:00:00"},
		{"overdue after downtime: due (in the past)", daily, "2024-04-20 10:00:00", "2024-05-01 12:00:00", "2024-04-21 10:00:00"},
		{"finer interval", Schedule{Interval: 30 * time.Second, Hour: -1, Minute: -1}, "2024-05-01 10:00:00", "2024-05-01 10:00:10", "2024-05-01 10:00:30"},
		{"never", Schedule{Hour: -1, Minute: -1}, "", "2024-05-01 10:00:00", ""},
		{"never, even with hour and minute", Schedule{Hour: 1, Minute: 0}, "2024-05-01 10:00:00", "2024-05-01 10:00:00", ""},
		// pghoard: interval 6 h and hour 1 give 01, 07, 13 and 19.
		{"aligned: next slot", sixAt1, "2024-05-01 07:00:02", "2024-05-01 08:00:00", "2024-05-01 13:00:00"},
		{"aligned: evening slot", sixAt1, "2024-05-01 13:00:05", "2024-05-01 18:59:59", "2024-05-01 19:00:00"},
		{"aligned: wraps to 01 next day", sixAt1, "2024-05-01 19:00:01", "2024-05-01 23:00:00", "2024-05-02 01:00:00"},
		{"aligned: missed slot made up at once", sixAt1, "2024-05-01 01:00:00", "2024-05-01 08:00:00", "2024-05-01 08:00:00"},
		{"aligned: no backup yet", sixAt1, "", "2024-05-01 08:00:00", "2024-05-01 08:00:00"},
		{"aligned: first backup off-slot waits for the next slot", sixAt1, "2024-05-01 08:00:00", "2024-05-01 08:30:00", "2024-05-01 13:00:00"},
		{"aligned daily at 02:30, before the slot", dailyAt0230, "2024-04-30 02:30:10", "2024-05-01 02:29:00", "2024-05-01 02:30:00"},
		{"aligned daily at 02:30, exactly at the slot", dailyAt0230, "2024-04-30 02:30:10", "2024-05-01 02:30:00", "2024-05-01 02:30:00"},
		{"aligned daily at 02:30, after today's backup", dailyAt0230, "2024-05-01 02:30:01", "2024-05-01 09:00:00", "2024-05-02 02:30:00"},
		{"aligned before 1970 slot arithmetic", Schedule{Interval: 7 * time.Hour, Hour: 23, Minute: 59}, "", "1969-12-31 23:00:00", "1969-12-31 23:00:00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var last time.Time
			if tc.last != "" {
				last = ts(tc.last)
			}
			got, ok := tc.s.Next(last, ts(tc.now))
			if tc.want == "" {
				if ok {
					t.Fatalf("due at %v, want never", got)
				}
				return
			}
			if !ok || !got.Equal(ts(tc.want)) {
				t.Fatalf("Next = %v (ok %v), want %s", got, ok, tc.want)
			}
		})
	}
}

// TestScheduleWithFakeClock walks a fake clock through two days of a
// 6-hour aligned schedule and checks that exactly the pghoard hours fire.
func TestScheduleWithFakeClock(t *testing.T) {
	s := Schedule{Interval: 6 * time.Hour, Hour: 1, Minute: 0}
	now := ts("2024-05-01 00:00:00")
	last := time.Time{}
	var fired []string
	for now.Before(ts("2024-05-03 00:00:00")) {
		if next, ok := s.Next(last, now); ok && !next.After(now) {
			fired = append(fired, now.Format("01-02 15:04"))
			last = now
		}
		now = now.Add(time.Minute)
	}
	want := []string{"05-01 00:00", "05-01 01:00", "05-01 07:00", "05-01 13:00", "05-01 19:00",
		"05-02 01:00", "05-02 07:00", "05-02 13:00", "05-02 19:00"}
	if len(fired) != len(want) {
		t.Fatalf("fired at %v, want %v", fired, want)
	}
	for i := range want {
		if fired[i] != want[i] {
			t.Fatalf("fired at %v, want %v", fired, want)
		}
	}
}

func TestEvery(t *testing.T) {
	now := ts("2024-05-01 12:00:00")
	if next, ok := every(time.Hour, time.Time{}, now); !ok || !next.Equal(now) {
		t.Fatalf("first run: %v %v", next, ok)
	}
	if next, _ := every(time.Hour, now, now); !next.Equal(now.Add(time.Hour)) {
		t.Fatalf("after a run: %v", next)
	}
	if _, ok := every(0, time.Time{}, now); ok {
		t.Fatal("interval 0 is due")
	}
}

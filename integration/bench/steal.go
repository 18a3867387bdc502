package bench

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// CPUTimes is the first ("cpu") line of /proc/stat: jiffies of all CPUs
// by state, in the kernel's order (user, nice, system, idle, iowait, irq,
// softirq, steal, ...).
type CPUTimes []uint64

// ParseCPUTimes reads the aggregate line of /proc/stat.
func ParseCPUTimes(stat string) (CPUTimes, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return nil, fmt.Errorf("/proc/stat: first line %q is not the cpu line with a steal column", line)
	}
	t := make(CPUTimes, 0, len(f)-1)
	for _, s := range f[1:] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("/proc/stat: %q: %w", s, err)
		}
		t = append(t, n)
	}
	return t, nil
}

// StealPct is the share of the CPUs' time between two readings that the
// hypervisor gave to someone else (steal), in percent; NaN without two
// readings. guest and guest_nice are already inside user and nice, so
// they are not added to the total.
func StealPct(before, after CPUTimes) float64 {
	if len(before) < 8 || len(after) < 8 {
		return math.NaN()
	}
	var total, steal float64
	for i := 0; i < 8 && i < len(before) && i < len(after); i++ {
		d := float64(after[i]) - float64(before[i])
		total += d
		if i == 7 {
			steal = d
		}
	}
	if total <= 0 {
		return math.NaN()
	}
	return 100 * steal / total
}

// stealNote is the report's sentence about steal, or "" when unknown.
func stealNote(pct float64) string {
	if math.IsNaN(pct) {
		return ""
	}
	return fmt.Sprintf("The hypervisor took %.1f%% of the vCPUs' time during the run (steal, from /proc/stat): with much of it every tool is slower and the ratios move. ", pct)
}

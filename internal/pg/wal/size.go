package wal

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ParseMemorySize reads a PostgreSQL memory setting as SHOW prints it
// ("16MB", "1GB", "8192kB", or a plain byte count).
func ParseMemorySize(v string) (uint64, error) {
	units := []struct {
		suffix string
		mult   uint64
	}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			n, err := strconv.ParseUint(num, 10, 64)
			if err != nil {
				return 0, err
			}
			if n > math.MaxUint64/u.mult {
				return 0, fmt.Errorf("memory size %q does not fit in 64 bits", v)
			}
			return n * u.mult, nil
		}
	}
	return strconv.ParseUint(v, 10, 64)
}

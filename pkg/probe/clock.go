package probe

import (
	"time"

	"golang.org/x/sys/unix"
)

// monotonicNow reads the clock bpf_ktime_get_ns uses.
func monotonicNow() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, err
	}
	return uint64(ts.Nano()), nil
}

// A Clock converts BPF timestamps to wall-clock time. The offset between the
// two clocks drifts when NTP slews the wall clock, so Wall re-reads it every
// second.
type Clock struct {
	offset  int64 // wall - monotonic, ns
	updated time.Time
}

// Wall converts a CLOCK_MONOTONIC timestamp in ns to wall-clock time.
func (c *Clock) Wall(mono uint64) time.Time {
	if now := time.Now(); now.Sub(c.updated) > time.Second {
		if m, err := monotonicNow(); err == nil {
			c.offset = now.UnixNano() - int64(m)
			c.updated = now
		}
	}
	return time.Unix(0, int64(mono)+c.offset)
}

package container

import (
	"math/rand/v2"
	"time"
)

// Backoff computes jittered exponential waits ("full jitter"): attempt n
// waits a uniformly random time in [0, min(Max, Base*2^n)). Spreading the
// waits over the whole window, rather than around its end, keeps many
// agents that failed at the same moment from retrying at the same moment.
type Backoff struct {
	Base time.Duration // window of the first attempt; DefaultBackoff.Base if <= 0
	Max  time.Duration // largest window; Base if smaller than Base

	// Rand, when set, makes the waits reproducible. A *rand.Rand is not
	// safe for concurrent use: do not share one between goroutines.
	Rand *rand.Rand
}

// DefaultBackoff suits waiting for a restarted local process: first retries
// within a fraction of a second, never more than 10 s apart.
var DefaultBackoff = Backoff{Base: 200 * time.Millisecond, Max: 10 * time.Second}

// Window returns the upper bound of attempt's wait: min(Max, Base*2^attempt).
func (b Backoff) Window(attempt int) time.Duration {
	base, max := b.Base, b.Max
	if base <= 0 {
		base = DefaultBackoff.Base
	}
	if max < base {
		max = base
	}
	w := base
	for i := 0; i < attempt && w < max; i++ {
		w *= 2
		if w <= 0 { // overflow
			return max
		}
	}
	return min(w, max)
}

// Next returns the wait before attempt (counting from 0).
func (b Backoff) Next(attempt int) time.Duration {
	w := int64(b.Window(attempt))
	if b.Rand != nil {
		return time.Duration(b.Rand.Int64N(w))
	}
	return time.Duration(rand.Int64N(w))
}

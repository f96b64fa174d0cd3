package daemon

import (
	"math/rand/v2"
	"time"
)

// Jitter returns a wait drawn uniformly from [0, window), so that daemons
// started together (a fleet upgrade, a node pool reboot) attach spread over
// the window instead of all at once. The source document sized its restart
// window to the cluster: 20 minutes at 1,000 nodes, 60 at 5,000. A nil r
// uses the global source.
func Jitter(window time.Duration, r *rand.Rand) time.Duration {
	if window <= 0 {
		return 0
	}
	if r != nil {
		return time.Duration(r.Int64N(int64(window)))
	}
	return time.Duration(rand.Int64N(int64(window)))
}

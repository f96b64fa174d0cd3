package calls

import (
	"testing"
	"time"
)

// Percentiles by nearest rank: the duration at rank ceil(q*n) of n sorted
// durations, 1 ms .. n ms here.
func TestPercentileNearestRank(t *testing.T) {
	for _, tc := range []struct {
		n             int
		p50, p90, p99 int
	}{
		{1, 1, 1, 1},
		{4, 2, 4, 4},
		{99, 50, 90, 99},
		{100, 50, 90, 99},
		{1000, 500, 900, 990},
	} {
		var s Summary
		// Added largest first: the order of arrival does not matter.
		for i := tc.n; i >= 1; i-- {
			s.Add(&Call{Func: "f", Duration: time.Duration(i) * time.Millisecond})
		}
		f := s.Func("f")
		for _, p := range []struct {
			q    float64
			want int
		}{{0.5, tc.p50}, {0.9, tc.p90}, {0.99, tc.p99}, {0, 1}, {1, tc.n}} {
			if got, want := f.Percentile(p.q), time.Duration(p.want)*time.Millisecond; got != want {
				t.Errorf("n=%d: percentile %v = %v, want %v", tc.n, p.q, got, want)
			}
		}
	}
	if got := (&FuncStats{}).Percentile(0.5); got != 0 {
		t.Errorf("percentile of no calls = %v, want 0", got)
	}
}

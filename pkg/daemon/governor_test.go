package daemon

import (
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/pkg/probe"
)

// fakeSet simulates probes on functions called at given rates: hits only
// accumulate while a probe's entry is attached.
type fakeSet struct {
	rates    []float64 // calls/s of each function
	entry    []bool    // entry probe attached
	rets     []bool    // RET probes attached
	hits     []float64
	cfgs     []probe.Config
	attaches []int
}

func newFakeSet(rates ...float64) *fakeSet {
	n := len(rates)
	s := &fakeSet{rates: rates, entry: make([]bool, n), rets: make([]bool, n), hits: make([]float64, n), cfgs: make([]probe.Config, n), attaches: make([]int, n)}
	for i := range s.entry {
		s.entry[i], s.rets[i] = true, true
	}
	return s
}

func (s *fakeSet) advance(d time.Duration) {
	for i, r := range s.rates {
		if s.entry[i] {
			s.hits[i] += r * d.Seconds()
		}
	}
}

func (s *fakeSet) ProbeCounters() ([]probe.Counters, error) {
	out := make([]probe.Counters, len(s.hits))
	for i, h := range s.hits {
		out[i].Hits = uint64(h)
		out[i].Emitted = uint64(h)
	}
	return out, nil
}
func (s *fakeSet) Pause(id int) error  { s.entry[id] = false; return nil }
func (s *fakeSet) Detach(id int) error { s.entry[id], s.rets[id] = false, false; return nil }
func (s *fakeSet) Reattach(id int) error {
	if !s.entry[id] {
		s.attaches[id]++
	}
	s.entry[id], s.rets[id] = true, true
	return nil
}
func (s *fakeSet) SetConfig(id int, c probe.Config) error { s.cfgs[id] = c; return nil }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// run advances simulated time by d in steps of at most 10ms, ticking the
// governor whenever it is due.
func run(g *Governor, s *fakeSet, now *time.Time, d time.Duration) {
	end := now.Add(d)
	for now.Before(end) {
		next := g.Next()
		if next.After(end) {
			next = end
		}
		step := min(next.Sub(*now), 10*time.Millisecond)
		if step > 0 {
			s.advance(step)
			*now = now.Add(step)
		}
		if !now.Before(g.Next()) {
			g.Tick(*now, s)
		}
	}
}

func testPolicy() Policy {
	return Policy{Budget: 0.01, Cost: 40 * time.Microsecond, Interval: time.Second, Window: 200 * time.Millisecond, MaxPeriod: 30 * time.Second}
}

func status(g *Governor, fn string) ProbeStatus {
	st, _ := g.Status()
	for _, s := range st {
		if s.Func == fn {
			return s
		}
	}
	return ProbeStatus{}
}

// A probe whose hits alone cost more than the budget is duty-cycled while
// the cold ones stay attached all the time; the estimate ends under budget
// and the hot probe comes back once its function calms down.
func TestGovernorThrottlesHottest(t *testing.T) {
	// 25k hits/s x 40us = 1 CPU; 10/s x 40us = 0.04%.
	set := newFakeSet(25000, 10, 50)
	g := NewGovernor(testPolicy(), quiet)
	for id, fn := range []string{"hot", "cold", "warm"} {
		g.Add(fn, id, probe.Config{}, 0)
	}
	now := time.Unix(1000, 0)
	run(g, set, &now, 3*time.Second)

	if st := status(g, "hot"); st.State != Throttled {
		t.Fatalf("hot probe %+v, want throttled", st)
	}
	for _, fn := range []string{"cold", "warm"} {
		if st := status(g, fn); st.State != Admitted || !st.Attached {
			t.Errorf("%s probe %+v, want admitted and attached", fn, st)
		}
	}
	if _, est := g.Status(); est > 0.01 {
		t.Errorf("estimated overhead %.4f CPUs, budget 0.01", est)
	}

	// Over a minute the hot probe is attached about its duty share: its
	// hits cost what the estimate says, within the budget.
	before := set.hits[0]
	coldBefore := set.hits[1]
	run(g, set, &now, time.Minute)
	spent := (set.hits[0] - before) * g.Cost.Seconds() / 60
	if spent > 0.01 {
		t.Errorf("hot probe spent %.4f CPUs, budget 0.01", spent)
	}
	if set.attaches[0] < 2 {
		t.Errorf("hot probe attached %d times in a minute, want duty cycles", set.attaches[0])
	}
	// Every call of the cold function was seen.
	if got := set.hits[1] - coldBefore; math.Abs(got-600) > 1 {
		t.Errorf("cold probe saw %.0f of 600 calls", got)
	}

	// The hot function calms down: measured in a window, re-admitted.
	set.rates[0] = 5
	st := status(g, "hot")
	run(g, set, &now, time.Duration(float64(g.Window)/st.Duty)+2*time.Second)
	if st := status(g, "hot"); st.State != Admitted || !st.Attached {
		t.Fatalf("hot probe %+v after calming down, want admitted", st)
	}
}

// Several hot probes share what the cold ones leave of the budget.
func TestGovernorSharesBudget(t *testing.T) {
	set := newFakeSet(20000, 10000, 20)
	pol := testPolicy()
	pol.MaxPeriod = 5 * time.Minute
	g := NewGovernor(pol, quiet)
	for id, fn := range []string{"a", "b", "c"} {
		g.Add(fn, id, probe.Config{}, 0)
	}
	now := time.Unix(1000, 0)
	run(g, set, &now, 5*time.Second)
	a, b, c := status(g, "a"), status(g, "b"), status(g, "c")
	if a.State != Throttled || b.State != Throttled || c.State != Admitted {
		t.Fatalf("states %v %v %v, want throttled throttled admitted", a.State, b.State, c.State)
	}
	// Equal shares: a, twice as hot, is attached half as often.
	if r := b.Duty / a.Duty; math.Abs(r-2) > 0.2 {
		t.Errorf("duty cycles %.4f and %.4f, want a ratio of 2", a.Duty, b.Duty)
	}
	if _, est := g.Status(); est > 0.0101 {
		t.Errorf("estimate %.4f over budget", est)
	}

	// With a shorter longest period, a is held at it and b gets the rest.
	g.MaxPeriod = 30 * time.Second
	run(g, set, &now, 5*time.Second)
	a, b = status(g, "a"), status(g, "b")
	if want := g.Window.Seconds() / g.MaxPeriod.Seconds(); math.Abs(a.Duty-want) > 1e-9 {
		t.Errorf("a's duty %.5f, want the floor %.5f", a.Duty, want)
	}
	if _, est := g.Status(); est > 0.0101 {
		t.Errorf("estimate %.4f over budget", est)
	}
}

// max_events_per_second raises the sampling while a probe emits more, and
// lowers it back when the rate falls.
func TestGovernorLimitsEvents(t *testing.T) {
	set := newFakeSet(100)
	g := NewGovernor(testPolicy(), quiet)
	g.Add("f", 0, probe.Config{SampleEvery: 2}, 10)
	now := time.Unix(1000, 0)
	run(g, set, &now, 3*time.Second)
	if got := set.cfgs[0].SampleEvery; got < 10 {
		t.Fatalf("sampling 1 in %d at 100 events/s, cap 10/s", got)
	}
	set.rates[0] = 0
	run(g, set, &now, 10*time.Second)
	if got := set.cfgs[0].SampleEvery; got != 2 {
		t.Errorf("sampling 1 in %d once quiet, want the configured 2", got)
	}
}

// Start jitter spreads N daemons uniformly over the window: the
// Kolmogorov-Smirnov distance to the uniform distribution stays below its
// 1% critical value.
func TestJitterUniform(t *testing.T) {
	const n = 2000
	window := 20 * time.Minute
	r := rand.New(rand.NewPCG(1, 2))
	xs := make([]float64, n)
	for i := range xs {
		d := Jitter(window, r)
		if d < 0 || d >= window {
			t.Fatalf("wait %v outside [0, %v)", d, window)
		}
		xs[i] = float64(d) / float64(window)
	}
	sort.Float64s(xs)
	var ks float64
	for i, x := range xs {
		ks = max(ks, math.Abs(float64(i+1)/n-x), math.Abs(x-float64(i)/n))
	}
	if crit := 1.63 / math.Sqrt(n); ks > crit {
		t.Errorf("KS distance %.4f > %.4f: not uniform over the window", ks, crit)
	}
	// Not bunched: every minute of the 20 gets some starts.
	var perMinute [20]int
	for _, x := range xs {
		perMinute[int(x*20)]++
	}
	for m, c := range perMinute {
		if c < n/20/2 {
			t.Errorf("minute %d: %d starts of %d", m, c, n)
		}
	}
	if Jitter(0, r) != 0 {
		t.Error("no window must mean no wait")
	}
}

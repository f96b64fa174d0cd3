package daemon

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"regexp"
	"sort"
	"strings"
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
	// syscalls/s on the node, each running the syscall programs twice
	syscalls float64
	runs     float64
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
	s.runs += 2 * s.syscalls * d.Seconds()
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
func (s *fakeSet) SyscallRuns() (uint64, error) { return uint64(s.runs), nil }
func (s *fakeSet) Pause(id int) error           { s.entry[id] = false; return nil }
func (s *fakeSet) Detach(id int) error          { s.entry[id], s.rets[id] = false, false; return nil }
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

// The syscall programs' runs, times the cost of one, are the node's term of
// the account: they come first, as the daemon's own CPU does, and the
// probes share what they leave. When they alone pass the budget the
// governor says so once; it cannot throttle them.
func TestGovernorSyscallCost(t *testing.T) {
	// warm: 100 calls/s x 40us = 0.4%, hot: 120 x 40us = 0.48%;
	// node: 40,000 syscalls/s x 2 runs x 50ns = 0.4% of a CPU.
	set := newFakeSet(100, 120)
	set.syscalls = 40000
	pol := testPolicy()
	pol.SyscallCost = 50 * time.Nanosecond
	var logs bytes.Buffer
	g := NewGovernor(pol, slog.New(slog.NewTextHandler(&logs, nil)))
	g.Add("warm", 0, probe.Config{}, 0)
	g.Add("hot", 1, probe.Config{}, 0)
	now := time.Unix(1000, 0)
	const first = 40 * time.Second
	run(g, set, &now, first)

	m := g.Overhead()
	if want := 0.004; math.Abs(m.Node-want) > want/100 {
		t.Errorf("node %.5f CPUs, want %.5f", m.Node, want)
	}
	if want := 0.004 * first.Seconds(); math.Abs(m.NodeTotal-want) > want/100 {
		t.Errorf("node total %.4f CPU seconds, want %.4f", m.NodeTotal, want)
	}
	// Both probes would fit the budget alone (0.88%); with the node's
	// 0.4%, only warm does.
	if w, h := status(g, "warm"), status(g, "hot"); w.State != Admitted || h.State != Throttled {
		t.Errorf("warm %v, hot %v: want admitted, throttled", w.State, h.State)
	}
	if m.Over || strings.Contains(logs.String(), "over budget") {
		t.Errorf("over budget at %.4f+%.4f CPUs of 0.01:\n%s", m.Target, m.Node, logs.String())
	}

	// 150,000 syscalls/s: the programs alone cost 1.5% of a CPU.
	set.syscalls = 150000
	run(g, set, &now, 90*time.Second)
	m = g.Overhead()
	if want := 0.015; math.Abs(m.Node-want) > want/100 || !m.Over {
		t.Errorf("node %.5f CPUs (want %.5f), over budget %v", m.Node, want, m.Over)
	}
	if n := strings.Count(logs.String(), "syscall programs alone cost more than the budget"); n != 1 {
		t.Errorf("%d warnings that the syscall programs alone are over budget, want 1:\n%s", n, logs.String())
	}
	if !regexp.MustCompile(`measured overhead over budget".* node_percent=0\.[1-9]`).MatchString(logs.String()) {
		t.Errorf("the over-budget warning does not name the node's share:\n%s", logs.String())
	}
	if w := status(g, "warm"); w.State != Throttled {
		t.Errorf("warm %v with the budget spent by the syscall programs, want throttled", w.State)
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

// runTrace is run with the functions' rates following trace, read at the
// start of each step. Steps of 7 ms, a divisor of no period the governor
// sets, make it act a little late, as a real one does: its windows drift
// across the bursts instead of meeting each at the same phase.
func runTrace(g *Governor, s *fakeSet, now *time.Time, d time.Duration, trace func(time.Time, []float64)) {
	end := now.Add(d)
	for now.Before(end) {
		trace(*now, s.rates)
		step := min(7*time.Millisecond, end.Sub(*now))
		s.advance(step)
		*now = now.Add(step)
		if !now.Before(g.Next()) {
			g.Tick(*now, s)
		}
	}
}

// A hot function that runs in bursts, 20,000 calls/s for 500 ms and none
// for the next 500 ms, as cilium-agent decodes JSON during regenerations.
// A window between two bursts measures nothing: the probe is not admitted
// again on it, re-admissions back off, and over half an hour its hits
// cost no more than the budget.
func TestGovernorBurstyTrace(t *testing.T) {
	set := newFakeSet(0, 10)
	pol := testPolicy()
	pol.MaxPeriod, pol.Horizon, pol.Backoff = time.Minute, 5*time.Minute, time.Minute
	g := NewGovernor(pol, quiet)
	g.Add("bursty", 0, probe.Config{}, 0)
	g.Add("cold", 1, probe.Config{}, 0)
	start := time.Unix(1000, 0)
	now := start
	bursts := func(at time.Time, rates []float64) {
		rates[0] = 0
		if at.Sub(start)/(500*time.Millisecond)%2 == 0 {
			rates[0] = 20000
		}
	}
	const span = 30 * time.Minute
	runTrace(g, set, &now, span, bursts)

	spent := set.hits[0] * g.Cost.Seconds() / span.Seconds()
	dec := g.Decisions()
	t.Logf("bursty probe: %.0f hits, %.3f%% of a CPU; %d throttles, %d re-admissions",
		set.hits[0], 100*spent, dec.Throttled, dec.Readmitted)
	if spent > g.Budget {
		t.Errorf("bursty probe cost %.4f CPUs, budget %.4f", spent, g.Budget)
	}
	// Re-admitted at most once per backoff, doubling: 1+2+4+8+16 minutes.
	if dec.Readmitted > 5 {
		t.Errorf("%d re-admissions in %v: flapping", dec.Readmitted, span)
	}
	if st := status(g, "cold"); st.State != Admitted {
		t.Errorf("cold probe %+v, want admitted", st)
	}
	if _, est := g.Status(); est > g.Budget*1.0001 {
		t.Errorf("planned overhead %.4f CPUs, budget %.4f", est, g.Budget)
	}
}

// A throttled function that stops altogether is admitted again, once a
// whole horizon of windows saw no burst and its backoff has ended; one
// empty window is not enough.
func TestGovernorReadmitsAfterHorizon(t *testing.T) {
	set := newFakeSet(20000)
	pol := testPolicy()
	pol.Horizon, pol.Backoff = 5*time.Minute, time.Minute
	g := NewGovernor(pol, quiet)
	g.Add("f", 0, probe.Config{}, 0)
	now := time.Unix(1000, 0)
	run(g, set, &now, 3*time.Second)
	if st := status(g, "f"); st.State != Throttled {
		t.Fatalf("probe %+v, want throttled", st)
	}
	set.rates[0] = 0
	run(g, set, &now, pol.Horizon-30*time.Second)
	if st := status(g, "f"); st.State != Throttled {
		t.Fatalf("probe %+v within the horizon of its last burst, want throttled", st)
	}
	run(g, set, &now, 30*time.Second+pol.MaxPeriod+2*time.Second)
	if st := status(g, "f"); st.State != Admitted || !st.Attached {
		t.Fatalf("probe %+v a horizon after its last burst, want admitted", st)
	}
}

// A throttled probe whose function stops being called, or is called only
// now and then, is attached less and less often, each quiet window
// doubling its period up to MaxPeriod: every attach costs the daemon
// kernel time. When the calls come back, a window within MaxPeriod
// measures them.
func TestGovernorQuietThrottledProbe(t *testing.T) {
	// 0 calls/s, and 20 calls/s: 0.08% of a CPU, which would fit in half
	// the probe's share even attached all the time.
	for _, calm := range []float64{0, 20} {
		t.Run(fmt.Sprintf("%.0f calls/s", calm), func(t *testing.T) { quietThrottledProbe(t, calm) })
	}
}

func quietThrottledProbe(t *testing.T, calm float64) {
	// 2,000 hits/s x 40us = 8% of a CPU: a period of 1.6s at a 1% budget.
	set := newFakeSet(2000)
	pol := testPolicy()
	pol.Horizon, pol.Backoff = 5*time.Minute, time.Minute
	g := NewGovernor(pol, quiet)
	g.Add("f", 0, probe.Config{}, 0)
	now := time.Unix(1000, 0)
	run(g, set, &now, 10*time.Second)
	st := status(g, "f")
	if st.State != Throttled {
		t.Fatalf("probe %+v, want throttled", st)
	}
	period := time.Duration(float64(pol.Window) / st.Duty)
	busy := set.attaches[0]
	if busy < 3 {
		t.Fatalf("%d attaches in 10s at a period of %v", busy, period)
	}

	set.rates[0] = calm
	quietFor := 4 * time.Minute
	run(g, set, &now, quietFor)
	// Doubling from period to MaxPeriod, then once per MaxPeriod.
	bound := int(math.Ceil(math.Log2(float64(pol.MaxPeriod)/float64(period)))) + int(quietFor/pol.MaxPeriod) + 1
	if n := set.attaches[0] - busy; n > bound {
		t.Errorf("%d attaches over %v at %.0f calls/s, want at most %d (period %v, max %v)", n, quietFor, calm, bound, period, pol.MaxPeriod)
	}
	if st := status(g, "f"); st.State != Throttled {
		t.Fatalf("probe %+v within the horizon of its last calls, want throttled", st)
	}

	set.rates[0] = 2000
	run(g, set, &now, pol.MaxPeriod+pol.Window+time.Second)
	if st := status(g, "f"); st.Rate == 0 {
		t.Errorf("probe %+v: calls back for MaxPeriod, not measured", st)
	}
}

// A breaker's trip throttles an admitted probe at once, not at the next
// decision, and counts as a burst at its allowance.
func TestGovernorTrip(t *testing.T) {
	set := newFakeSet(10)
	pol := testPolicy()
	pol.TripRate = 2500 // 25 hits per 10 ms
	g := NewGovernor(pol, quiet)
	g.Add("f", 0, probe.Config{}, 0)
	now := time.Unix(1000, 0)
	run(g, set, &now, 2500*time.Millisecond)
	if st := status(g, "f"); st.State != Admitted {
		t.Fatalf("probe %+v, want admitted", st)
	}
	g.Trip(0)
	if !g.Next().IsZero() {
		t.Fatal("a trip does not make the next Tick due at once")
	}
	now = now.Add(time.Millisecond)
	g.Tick(now, set)
	st := status(g, "f")
	if st.State != Throttled || set.entry[0] {
		t.Fatalf("probe %+v (entry attached %v) after its breaker tripped, want throttled and paused", st, set.entry[0])
	}
	if st.Peak < pol.TripRate {
		t.Errorf("peak %.0f hits/s after a trip, want at least %.0f", st.Peak, pol.TripRate)
	}
	if g.Decisions().Tripped != 1 {
		t.Errorf("decisions %+v, want one trip", g.Decisions())
	}
}

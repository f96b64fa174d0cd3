package daemon

import (
	"cmp"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/cilium-tracer/tracer/pkg/probe"
)

// State is what the governor does with a probe.
type State int

const (
	// Admitted: attached all the time, every call traced.
	Admitted State = iota
	// Throttled: attached for Window once per period, detached in between.
	Throttled
)

func (s State) String() string {
	switch s {
	case Admitted:
		return "admitted"
	case Throttled:
		return "throttled"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Policy is the governor's budget and pacing.
type Policy struct {
	// Budget is the CPU time the probes may cost the target per second,
	// in CPUs: 0.01 is 1% of one CPU.
	Budget float64
	// Cost is the CPU time one traced call costs: the traps of its entry
	// and RET probes, whether or not the call is sampled.
	Cost time.Duration
	// SyscallCost is the CPU time one run of the syscall programs costs
	// the process that made the system call (MeasureSyscallCost); they
	// run at the entry and exit of every system call on the node.
	SyscallCost time.Duration
	// Interval is how often admitted probes' rates are measured and the
	// budget divided.
	Interval time.Duration
	// Window is how long a throttled probe stays attached per period; its
	// rate is measured then.
	Window time.Duration
	// MaxPeriod bounds a throttled probe's period, so a probe whose
	// function calmed down is noticed within MaxPeriod.
	MaxPeriod time.Duration
	// Horizon is how long a measured rate counts: admission divides the
	// budget by each probe's peak rate over the horizon. A window that
	// fell between two bursts lowers nothing; only a horizon without a
	// burst does. 0 keeps only the latest measurement.
	Horizon time.Duration
	// Backoff is how long a probe stays throttled at least once
	// throttled; each further throttle doubles it, up to maxDoublings
	// times. A probe admitted for twice its last backoff starts over.
	Backoff time.Duration
	// TripRate is the hit rate a tripped breaker stands for (its
	// allowance per breaker window, over the window): a trip measures
	// at least this, however few hits the governor saw since its last
	// reading.
	TripRate float64
}

// maxDoublings bounds a throttled probe's backoff: 64 × Backoff.
const maxDoublings = 6

// accountSpan is how far back the measured overhead is averaged, for the
// budget and /metrics.
const accountSpan = time.Minute

// grace is how long the RET probes of a throttled probe outlive its entry
// probe when it is switched off: the calls in flight return and are
// reported instead of being left unfinished.
const grace = 20 * time.Millisecond

// readmit is the share of the remaining budget a throttled probe's
// overhead must fit in to be admitted again; below 1 so that a probe at the
// edge of the budget does not flap.
const readmit = 0.5

// maxDuty keeps a throttled probe detached at least half the time.
const maxDuty = 0.5

// probeSet is what the governor needs of a *session.Session.
type probeSet interface {
	ProbeCounters() ([]probe.Counters, error)
	SyscallRuns() (uint64, error)
	Pause(id int) error
	Detach(id int) error
	Reattach(id int) error
	SetConfig(id int, c probe.Config) error
}

type phase int

const (
	on      phase = iota // attached
	pausing              // entry detached, RETs still attached
	off                  // detached
)

// A Governor keeps the cost of a set of probes, and of the process that
// runs them, under its budget. The probes cost the target hits × Cost;
// the process's own CPU time comes from Self; the syscall programs, if
// the set has them, cost the node their runs × SyscallCost. Probes are
// admitted cheapest first, each at its peak rate over the Horizon, while
// the budget left by the process and the syscall programs lasts, so cold
// probes keep tracing every call; the rest, the hottest, are duty-cycled
// and share what remains. A throttled probe is admitted again when its
// peak, measured in its windows, fits, and not before its backoff ends.
// The syscall programs are not throttled: they run at every system call
// whatever the probes do, and only turning them off (syscalls: false)
// ends their cost.
//
// Unsampled calls cost the same trap as sampled ones, so sampling does not
// enter the estimate. A Governor is not safe for concurrent use.
type Governor struct {
	Policy
	Log *slog.Logger
	// Self, if set, returns the CPU time the process has used so far.
	Self func() time.Duration

	probes       map[string]*governed
	nextDecision time.Time
	idle         time.Duration // since the last hit, counted at decisions
	spentAt      float64       // spent at the last decision
	estimate     float64
	overBudget   bool
	nodeOver     bool // the syscall programs alone were over budget
	decisions    Decisions

	spent    float64 // target CPU seconds of the hits counted so far
	self0    float64 // Self at the first Tick
	selfSeen bool
	node     float64   // CPU seconds of the syscall programs' runs so far
	runs     uint64    // the set's syscall run counter, as last read
	runsSeen bool      // runs holds this set's counter
	history  []account // the last accountSpan of spent, self and node
	settled  bool      // history covers most of accountSpan
	measured Overhead
}

// account is the CPU time spent by a time: by the probes in the target,
// by the process itself, and by the syscall programs on the node.
type account struct {
	at                 time.Time
	target, self, node float64
}

// Overhead is the CPU the tracing measurably costs.
type Overhead struct {
	Target, Self, Node                float64 // CPUs, averaged over the last minute
	TargetTotal, SelfTotal, NodeTotal float64 // CPU seconds since the governor started
	// Over: Target + Self + Node exceeded the budget over the last
	// minute.
	Over bool
}

// Decisions count what the governor did since it started.
type Decisions struct {
	Throttled  uint64 // probes switched to duty cycles
	Readmitted uint64 // throttled probes admitted again
	Resampled  uint64 // sampling changes for max_events_per_second
	Tripped    uint64 // breakers tripped in BPF
}

// Decisions returns what the governor did since it started.
func (g *Governor) Decisions() Decisions { return g.decisions }

type governed struct {
	fn     string
	id     int
	base   probe.Config // as configured
	maxEPS float64
	sample uint32 // 1-in-N in force

	state  State
	phase  phase
	next   time.Time // next phase change of a throttled probe
	duty   float64
	period time.Duration
	// quiet counts a throttled probe's last windows in a row without a
	// hit: each doubles its period, up to MaxPeriod.
	quiet int

	rate     float64  // entry hits/s while attached, latest measurement
	samples  []sample // rates measured over the horizon, oldest first
	emitRate float64  // records/s while attached
	measured bool

	throttles  int       // throttles since the probe was last admitted for long
	until      time.Time // a throttled probe stays throttled until then
	admittedAt time.Time
	trip       bool   // the breaker tripped since the last Tick
	trips      uint64 // breaker trips counted in BPF, as last read
	forced     bool   // tripped while admitted: throttle at this decision
	seen       uint64 // hits already in spent
	counting   bool   // seen holds this set's counter

	baseline bool // hits and emitted hold the counters at since
	hits     uint64
	emitted  uint64
	since    time.Time
}

// NewGovernor returns a governor with no probes.
func NewGovernor(p Policy, log *slog.Logger) *Governor {
	return &Governor{Policy: p, Log: log, probes: map[string]*governed{}}
}

// Add puts an attached probe under the governor. A function it already
// knows (the target restarted, or a reload) keeps its measured rate and
// state: a probe throttled before a restart is throttled after it.
func (g *Governor) Add(fn string, id int, c probe.Config, maxEPS float64) {
	p, ok := g.probes[fn]
	if !ok {
		p = &governed{fn: fn}
		g.probes[fn] = p
	}
	p.id, p.base, p.maxEPS, p.sample = id, c, maxEPS, max(c.SampleEvery, 1)
	p.phase, p.baseline, p.counting, p.trip = on, false, false, false
	if p.state == Throttled {
		p.next = time.Time{} // measured, then switched off, at the next Tick
	}
}

// Has reports whether fn is under the governor.
func (g *Governor) Has(fn string) bool { return g.probes[fn] != nil }

// Update changes a probe's configuration, which its caller has already
// applied to the set, without touching its state.
func (g *Governor) Update(fn string, c probe.Config, maxEPS float64) {
	if p := g.probes[fn]; p != nil {
		p.base, p.maxEPS, p.sample = c, maxEPS, max(c.SampleEvery, 1)
	}
}

// Config returns a probe's configuration as given to Add or Update, before
// any change of sampling for max_events_per_second.
func (g *Governor) Config(fn string) (probe.Config, float64) {
	if p := g.probes[fn]; p != nil {
		return p.base, p.maxEPS
	}
	return probe.Config{}, 0
}

// Keep forgets every probe but those named in fns: after a restart, the
// functions the new executable no longer has.
func (g *Governor) Keep(fns map[string]int) {
	for fn := range g.probes {
		if _, ok := fns[fn]; !ok {
			delete(g.probes, fn)
		}
	}
}

// Remove forgets a probe; its caller detaches it.
func (g *Governor) Remove(fn string) { delete(g.probes, fn) }

// Reset forgets every probe's attachment (the set is gone) but keeps what
// was measured, for Add after the target restarts.
func (g *Governor) Reset() {
	for _, p := range g.probes {
		p.baseline, p.counting = false, false
	}
	g.runsSeen = false
}

// Trip tells the governor that the breaker of probe id tripped in BPF:
// its hits in one breaker window passed their allowance. The next Tick,
// due at once, throttles it or ends its window.
func (g *Governor) Trip(id int) {
	for _, p := range g.probes {
		if p.id == id && p.phase == on {
			p.trip = true
		}
	}
}

// Next returns when Tick has something to do.
func (g *Governor) Next() time.Time {
	next := g.nextDecision
	for _, p := range g.probes {
		if p.trip {
			return time.Time{}
		}
		if p.state == Throttled && p.next.Before(next) {
			next = p.next
		}
	}
	return next
}

// Tick reads the counters, moves throttled probes through their duty
// cycles, and every Interval measures the admitted probes and divides the
// budget again.
func (g *Governor) Tick(now time.Time, set probeSet) error {
	cs, err := set.ProbeCounters()
	if err != nil {
		return fmt.Errorf("governor: %w", err)
	}
	runs, err := set.SyscallRuns()
	if err != nil {
		return fmt.Errorf("governor: %w", err)
	}
	g.account(now, cs, runs)
	tripped := false
	for _, p := range g.sorted() {
		if p.id >= len(cs) {
			continue
		}
		c := cs[p.id]
		if c.Tripped != p.trips {
			if c.Tripped > p.trips && p.phase == on {
				p.trip = true
			}
			p.trips = c.Tripped
		}
		if !p.baseline {
			p.reset(c, now)
			if p.state == Throttled && p.next.IsZero() {
				p.next = now.Add(g.Window)
			}
			if !p.trip {
				continue
			}
		}
		if p.trip {
			p.trip, p.quiet = false, 0
			if p.phase != on {
				continue
			}
			g.decisions.Tripped++
			g.measure(p, c, now, g.TripRate)
			if p.state == Admitted {
				// Throttled now, not at the next decision: a burst
				// costs the target every trap until then.
				p.forced = true
				tripped = true
				continue
			}
			g.pause(now, p, set)
			continue
		}
		if p.state != Throttled || now.Before(p.next) {
			continue
		}
		switch p.phase {
		case on:
			g.measure(p, c, now, 0)
			// A window whose rate would fit in half the probe's share
			// even attached all the time is quiet: the function has
			// calmed down, whether to nothing or to a trickle of
			// calls, as an idle cilium-agent's JSON.
			if p.rate*g.Cost.Seconds() <= readmit*g.overhead(p)*p.duty {
				p.quiet++
			} else {
				p.quiet = 0
			}
			g.pause(now, p, set)
		case pausing:
			if err := set.Detach(p.id); err != nil {
				g.Log.Warn("governor: cannot detach throttled probe", "func", p.fn, "err", err)
				p.next = now.Add(g.Window)
				continue
			}
			// Each attach and detach costs this process a few ms of
			// kernel time: a function that calmed down is looked at
			// less and less often. Its peak still holds it
			// throttled, and when it runs again its breaker trips in
			// the first window.
			period := min(p.period<<min(p.quiet, 16), max(g.MaxPeriod, p.period))
			p.phase, p.next = off, now.Add(max(period-g.Window-grace, 0))
		case off:
			if err := set.Reattach(p.id); err != nil {
				g.Log.Warn("governor: cannot reattach throttled probe", "func", p.fn, "err", err)
				p.next = now.Add(p.period)
				continue
			}
			p.phase, p.next = on, now.Add(g.Window)
			p.reset(c, now)
		}
	}
	if now.Before(g.nextDecision) && !tripped {
		return nil
	}
	for _, p := range g.probes {
		if p.state == Admitted && p.baseline && p.id < len(cs) && !p.forced {
			g.measure(p, cs[p.id], now, 0)
		}
	}
	g.decide(now, set)
	g.nextDecision = now.Add(g.interval())
	return nil
}

// idleDecisions is how many intervals apart decisions get while no probe
// is hit or resampled: an idle daemon wakes less. A probe that
// turns hot meanwhile is held by its breaker within milliseconds.
const idleDecisions = 4

// interval is how long until the next decision.
func (g *Governor) interval() time.Duration {
	quiet := g.spent == g.spentAt
	g.spentAt = g.spent
	for _, p := range g.probes {
		// A probe still sampled above its configuration after a burst
		// of events relaxes one step per decision. A throttled probe
		// that was not hit holds no decision: its duty cycle wakes the
		// governor by itself (Next), and its readmission waits for its
		// backoff anyway.
		quiet = quiet && p.sample <= max(p.base.SampleEvery, 1)
	}
	if !quiet {
		g.idle = 0
		return g.Interval
	}
	g.idle += g.Interval
	return min(g.idle, idleDecisions*g.Interval)
}

func (p *governed) reset(c probe.Counters, now time.Time) {
	p.hits, p.emitted, p.since, p.baseline = c.Hits, c.Emitted, now, true
}

// measure takes the rates since the baseline, at least floor, keeps the
// hit rate for the horizon and starts a new baseline.
func (g *Governor) measure(p *governed, c probe.Counters, now time.Time, floor float64) {
	dt := now.Sub(p.since).Seconds()
	if dt < 0.001 {
		if floor > 0 {
			p.rate = max(p.rate, floor)
			p.record(now, p.rate, g.Horizon)
		}
		return
	}
	p.rate = max(float64(c.Hits-p.hits)/dt, floor)
	p.emitRate = float64(c.Emitted-p.emitted) / dt
	p.measured = true
	p.record(now, p.rate, g.Horizon)
	p.reset(c, now)
}

type sample struct {
	at   time.Time
	rate float64
}

// record keeps a measured rate and forgets those older than the horizon,
// all but the latest.
func (p *governed) record(now time.Time, rate float64, horizon time.Duration) {
	p.samples = append(p.samples, sample{now, rate})
	old := 0
	for old < len(p.samples)-1 && now.Sub(p.samples[old].at) > horizon {
		old++
	}
	p.samples = slices.Delete(p.samples, 0, old)
}

// peak is the highest rate measured over the horizon, or the latest.
func (p *governed) peak() float64 {
	var r float64
	for _, s := range p.samples {
		r = max(r, s.rate)
	}
	return r
}

// overhead is what the probe costs the target attached all the time, at
// its peak rate.
func (g *Governor) overhead(p *governed) float64 {
	return p.peak() * g.Cost.Seconds()
}

// backoff is how long a probe stays throttled after its nth throttle.
func (g *Governor) backoff(n int) time.Duration {
	return g.Backoff << min(max(n-1, 0), maxDoublings)
}

// account adds the hits since the last reading to the CPU time spent in
// the target, and the syscall programs' runs to the CPU time spent on the
// node, and measures the overhead over the last accountSpan.
func (g *Governor) account(now time.Time, cs []probe.Counters, runs uint64) {
	for _, p := range g.probes {
		if p.id >= len(cs) {
			continue
		}
		h := cs[p.id].Hits
		if p.counting && h >= p.seen {
			g.spent += float64(h-p.seen) * g.Cost.Seconds()
		}
		p.seen, p.counting = h, true
	}
	if g.runsSeen && runs >= g.runs {
		g.node += float64(runs-g.runs) * g.SyscallCost.Seconds()
	}
	g.runs, g.runsSeen = runs, true
	var self float64
	if g.Self != nil {
		self = g.Self().Seconds()
		if !g.selfSeen {
			g.self0, g.selfSeen = self, true
		}
		self -= g.self0
	}
	g.history = append(g.history, account{now, g.spent, self, g.node})
	old := 0
	for old < len(g.history)-1 && now.Sub(g.history[old+1].at) >= accountSpan {
		old++
	}
	g.history = slices.Delete(g.history, 0, old)
	first := g.history[0]
	m := Overhead{TargetTotal: g.spent, SelfTotal: self, NodeTotal: g.node}
	if dt := now.Sub(first.at).Seconds(); dt > 0 {
		m.Target = (g.spent - first.target) / dt
		m.Self = (self - first.self) / dt
		m.Node = (g.node - first.node) / dt
	}
	// Only once the span is mostly covered: a daemon starting up spends
	// a burst of its own CPU on its pipeline and first readings.
	g.settled = now.Sub(first.at) >= accountSpan/2
	m.Over = g.settled && m.Target+m.Self+m.Node > g.Budget*1.1
	if m.Over && !g.measured.Over {
		g.Log.Warn("governor: measured overhead over budget",
			"target_percent", round2(100*m.Target), "self_percent", round2(100*m.Self),
			"node_percent", round2(100*m.Node), "budget_percent", round2(100*g.Budget))
	}
	nodeOver := g.settled && m.Node > g.Budget*1.1
	if nodeOver && !g.nodeOver {
		g.Log.Warn("governor: the syscall programs alone cost more than the budget; "+
			"they run at every system call on the node and cannot be throttled: "+
			"turn syscalls off, or raise budget_percent",
			"node_percent", round2(100*m.Node), "budget_percent", round2(100*g.Budget))
	}
	g.nodeOver = nodeOver
	g.measured = m
}

// Overhead returns what the tracing measurably costs. Over is also set
// while the plan itself cannot hold the budget.
func (g *Governor) Overhead() Overhead {
	m := g.measured
	m.Over = m.Over || g.overBudget
	return m
}

func (g *Governor) sorted() []*governed {
	ps := make([]*governed, 0, len(g.probes))
	for _, p := range g.probes {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b *governed) int { return cmp.Compare(a.fn, b.fn) })
	return ps
}

// decide divides the budget: cheapest probes first, each admitted while
// its overhead fits; the rest share what remains by duty cycle.
func (g *Governor) decide(now time.Time, set probeSet) {
	ps := g.sorted()
	slices.SortStableFunc(ps, func(a, b *governed) int { return cmp.Compare(g.overhead(a), g.overhead(b)) })

	// The process's own CPU and the syscall programs' come first:
	// throttling a probe lowers neither, so the probes share what they
	// leave. The programs' from the first reading on, the process's
	// once its start-up burst is behind it.
	fixed := g.measured.Node
	if g.settled {
		fixed += g.measured.Self
	}
	remaining := g.Budget - fixed
	var throttled []*governed
	for _, p := range ps {
		o := g.overhead(p)
		limit := remaining
		if p.state == Throttled {
			limit *= readmit
		}
		forced := p.forced || p.state == Throttled && now.Before(p.until)
		p.forced = false
		// A probe that costs nothing is never throttled, even when the
		// process's own CPU has used up the budget.
		if !forced && (o == 0 || o <= limit) {
			g.admit(now, p, set)
			remaining -= o
			continue
		}
		throttled = append(throttled, p)
	}
	g.estimate = g.Budget - fixed - remaining

	// Equal shares of what remains, hottest first: a probe held at the
	// longest period spends more than its share, and the others split
	// what it leaves.
	minDuty := g.Window.Seconds() / g.MaxPeriod.Seconds()
	rest := max(remaining, 0)
	slices.Reverse(throttled)
	for i, p := range throttled {
		o := g.overhead(p)
		share := max(rest, 0) / float64(len(throttled)-i)
		duty := maxDuty // held by its backoff alone: costs nothing
		if o > 0 {
			duty = min(max(share/o, minDuty), maxDuty)
		}
		rest -= o * duty
		p.duty = duty
		p.period = time.Duration(float64(g.Window) / duty)
		g.estimate += o * duty
		if p.state == Throttled {
			continue
		}
		if !p.admittedAt.IsZero() && now.Sub(p.admittedAt) > 2*g.backoff(p.throttles) {
			p.throttles = 0
		}
		p.throttles++
		p.until = now.Add(g.backoff(p.throttles))
		g.Log.Info("governor: throttling probe",
			"func", p.fn, "calls_per_s", math.Round(p.rate), "peak_calls_per_s", math.Round(p.peak()),
			"overhead_percent", round2(100*o), "budget_percent", round2(100*g.Budget),
			"window", g.Window, "period", p.period.Round(time.Millisecond),
			"until", p.until.Sub(now).Round(time.Second))
		p.state = Throttled
		g.decisions.Throttled++
		if p.phase == on {
			g.pause(now, p, set)
		}
	}
	over := g.estimate > g.Budget*1.0001
	if over && !g.overBudget {
		g.Log.Warn("governor: over budget even with the longest period",
			"estimated_percent", round2(100*g.estimate), "budget_percent", round2(100*g.Budget),
			"max_period", g.MaxPeriod)
	}
	g.overBudget = over

	for _, p := range ps {
		g.limitEvents(p, set)
	}
}

// pause switches a throttled probe's entry off; its RETs follow after
// grace. A probe that cannot be paused stays on for another window.
func (g *Governor) pause(now time.Time, p *governed, set probeSet) {
	if err := set.Pause(p.id); err != nil {
		g.Log.Warn("governor: cannot pause throttled probe", "func", p.fn, "err", err)
		p.next = now.Add(g.Window)
		return
	}
	p.phase, p.next = pausing, now.Add(grace)
}

func (g *Governor) admit(now time.Time, p *governed, set probeSet) {
	p.duty, p.period = 1, 0
	if p.state == Admitted {
		return
	}
	if p.phase != on {
		if err := set.Reattach(p.id); err != nil {
			g.Log.Warn("governor: cannot reattach probe", "func", p.fn, "err", err)
			return
		}
	}
	g.Log.Info("governor: re-admitting probe",
		"func", p.fn, "calls_per_s", math.Round(p.rate), "peak_calls_per_s", math.Round(p.peak()),
		"overhead_percent", round2(100*g.overhead(p)), "budget_percent", round2(100*g.Budget))
	p.state, p.phase, p.admittedAt = Admitted, on, now
	p.baseline = false
	g.decisions.Readmitted++
}

// limitEvents raises a probe's sampling while its records outrun its
// max_events_per_second, and lowers it back when they fall well below.
func (g *Governor) limitEvents(p *governed, set probeSet) {
	if p.maxEPS <= 0 || !p.measured {
		return
	}
	base := max(p.base.SampleEvery, 1)
	sample := p.sample
	// Aim at 90% of the cap, and let the rate overshoot it by 10% before
	// acting: the rate of a random sample wobbles.
	switch {
	case p.emitRate > 1.1*p.maxEPS:
		sample = uint32(min(math.Ceil(float64(p.sample)*p.emitRate/(0.9*p.maxEPS)), 1<<24))
	case p.sample > base && p.emitRate*4 < p.maxEPS:
		sample = max(base, p.sample/2)
	}
	if sample == p.sample {
		return
	}
	c := p.base
	c.SampleEvery = sample
	if err := set.SetConfig(p.id, c); err != nil {
		g.Log.Warn("governor: cannot change sampling", "func", p.fn, "err", err)
		return
	}
	g.Log.Info("governor: sampling changed to stay under max_events_per_second",
		"func", p.fn, "sample_every", sample, "events_per_s", math.Round(p.emitRate), "max", p.maxEPS)
	p.sample = sample
	g.decisions.Resampled++
}

// ProbeStatus is the governor's view of one probe.
type ProbeStatus struct {
	Func     string
	ID       int
	State    State
	Attached bool    // entry probe attached now
	Rate     float64 // entry hits/s, measured while attached
	Peak     float64 // highest Rate over the horizon
	Duty     float64 // share of time attached: 1 when admitted
	Overhead float64 // estimated CPUs: Peak × Cost × Duty
	Sample   uint32  // 1-in-N sampling in force
}

// Status returns every probe's status, by function name, and the estimated
// total overhead in CPUs.
func (g *Governor) Status() ([]ProbeStatus, float64) {
	var out []ProbeStatus
	for _, p := range g.sorted() {
		duty := p.duty
		if p.state == Admitted {
			duty = 1
		}
		out = append(out, ProbeStatus{
			Func: p.fn, ID: p.id, State: p.state, Attached: p.phase == on,
			Rate: p.rate, Peak: p.peak(), Duty: duty, Overhead: g.overhead(p) * duty, Sample: p.sample,
		})
	}
	return out, g.estimate
}

func round2(x float64) float64 { return math.Round(x*100) / 100 }

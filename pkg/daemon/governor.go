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
	// Interval is how often admitted probes' rates are measured and the
	// budget divided.
	Interval time.Duration
	// Window is how long a throttled probe stays attached per period; its
	// rate is measured then.
	Window time.Duration
	// MaxPeriod bounds a throttled probe's period, so a probe whose
	// function calmed down is noticed within MaxPeriod.
	MaxPeriod time.Duration
}

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

// A Governor keeps the estimated cost of a set of probes under its budget:
// cost = Σ hit rate × Cost over the probes, with each rate measured while
// its probe is attached. Probes are admitted cheapest first while the
// budget lasts, so cold probes keep tracing every call; the rest, the
// hottest, are duty-cycled and share what remains. A throttled probe is
// admitted again when its rate, measured in its windows, fits.
//
// Unsampled calls cost the same trap as sampled ones, so sampling does not
// enter the estimate. A Governor is not safe for concurrent use.
type Governor struct {
	Policy
	Log *slog.Logger

	probes       map[string]*governed
	nextDecision time.Time
	estimate     float64
	overBudget   bool
	decisions    Decisions
}

// Decisions count what the governor did since it started.
type Decisions struct {
	Throttled  uint64 // probes switched to duty cycles
	Readmitted uint64 // throttled probes admitted again
	Resampled  uint64 // sampling changes for max_events_per_second
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

	rate     float64 // entry hits/s while attached
	emitRate float64 // records/s while attached
	measured bool

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
	p.phase, p.baseline = on, false
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
		p.baseline = false
	}
}

// Next returns when Tick has something to do.
func (g *Governor) Next() time.Time {
	next := g.nextDecision
	for _, p := range g.probes {
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
	for _, p := range g.sorted() {
		if p.id >= len(cs) {
			continue
		}
		c := cs[p.id]
		if !p.baseline {
			p.reset(c, now)
			if p.state == Throttled && p.next.IsZero() {
				p.next = now.Add(g.Window)
			}
			continue
		}
		if p.state != Throttled || now.Before(p.next) {
			continue
		}
		switch p.phase {
		case on:
			p.measure(c, now)
			g.pause(now, p, set)
		case pausing:
			if err := set.Detach(p.id); err != nil {
				g.Log.Warn("governor: cannot detach throttled probe", "func", p.fn, "err", err)
				p.next = now.Add(g.Window)
				continue
			}
			p.phase, p.next = off, now.Add(max(p.period-g.Window-grace, 0))
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
	if now.Before(g.nextDecision) {
		return nil
	}
	for _, p := range g.probes {
		if p.state == Admitted && p.baseline && p.id < len(cs) {
			p.measure(cs[p.id], now)
		}
	}
	g.decide(now, set)
	g.nextDecision = now.Add(g.Interval)
	return nil
}

func (p *governed) reset(c probe.Counters, now time.Time) {
	p.hits, p.emitted, p.since, p.baseline = c.Hits, c.Emitted, now, true
}

// measure takes the rates since the baseline and starts a new one.
func (p *governed) measure(c probe.Counters, now time.Time) {
	dt := now.Sub(p.since).Seconds()
	if dt < 0.01 {
		return
	}
	p.rate = float64(c.Hits-p.hits) / dt
	p.emitRate = float64(c.Emitted-p.emitted) / dt
	p.measured = true
	p.reset(c, now)
}

func (g *Governor) overhead(p *governed) float64 {
	return p.rate * g.Cost.Seconds()
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

	remaining := g.Budget
	var throttled []*governed
	for _, p := range ps {
		o := g.overhead(p)
		limit := remaining
		if p.state == Throttled {
			limit *= readmit
		}
		if o <= limit {
			g.admit(now, p, set)
			remaining -= o
			continue
		}
		throttled = append(throttled, p)
	}
	g.estimate = g.Budget - remaining

	// Equal shares of what remains, hottest first: a probe held at the
	// longest period spends more than its share, and the others split
	// what it leaves.
	minDuty := g.Window.Seconds() / g.MaxPeriod.Seconds()
	rest := max(remaining, 0)
	slices.Reverse(throttled)
	for i, p := range throttled {
		o := g.overhead(p)
		share := max(rest, 0) / float64(len(throttled)-i)
		duty := min(max(share/o, minDuty), maxDuty)
		rest -= o * duty
		p.duty = duty
		p.period = time.Duration(float64(g.Window) / duty)
		g.estimate += o * duty
		if p.state == Throttled {
			continue
		}
		g.Log.Info("governor: throttling probe",
			"func", p.fn, "calls_per_s", math.Round(p.rate),
			"overhead_percent", round2(100*o), "budget_percent", round2(100*g.Budget),
			"window", g.Window, "period", p.period.Round(time.Millisecond))
		p.state = Throttled
		g.decisions.Throttled++
		g.pause(now, p, set)
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
		"func", p.fn, "calls_per_s", math.Round(p.rate),
		"overhead_percent", round2(100*g.overhead(p)), "budget_percent", round2(100*g.Budget))
	p.state, p.phase = Admitted, on
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
	Duty     float64 // share of time attached: 1 when admitted
	Overhead float64 // estimated CPUs: Rate × Cost × Duty
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
			Rate: p.rate, Duty: duty, Overhead: g.overhead(p) * duty, Sample: p.sample,
		})
	}
	return out, g.estimate
}

func round2(x float64) float64 { return math.Round(x*100) / 100 }

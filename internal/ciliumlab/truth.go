package ciliumlab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// A Mark is a quiet point: no regeneration running or queued, and what the
// agent had counted and logged by then. Between two marks, the agent's
// counts and the traced calls that started there cover the same
// regenerations exactly.
type Mark struct {
	Time      time.Time
	PID       int
	Metrics   Metrics
	LogOffset int64
}

// Mark waits for a quiet point and records it.
func (l *Lab) Mark(ctx context.Context) (Mark, error) {
	for range 20 {
		if err := l.WaitQuiet(ctx); err != nil {
			return Mark{}, err
		}
		m := Mark{Time: time.Now(), PID: l.agentPID}
		var err error
		if m.Metrics, err = l.Metrics(ctx); err != nil {
			return Mark{}, err
		}
		st, err := os.Stat(l.LogPath())
		if err != nil {
			return Mark{}, err
		}
		m.LogOffset = st.Size()
		// A regeneration that began while the mark was taken would be
		// on one side in the counts and on the other in the calls:
		// take it again.
		again, err := l.Metrics(ctx)
		if err != nil {
			return Mark{}, err
		}
		if again.Completed() == m.Metrics.Completed() && l.allReady(ctx) {
			return m, nil
		}
	}
	return Mark{}, errors.New("cilium-agent never stayed quiet long enough to take a mark")
}

func (l *Lab) allReady(ctx context.Context) bool {
	eps, err := l.Endpoints(ctx)
	if err != nil {
		return false
	}
	for _, e := range eps {
		if e.State != "ready" {
			return false
		}
	}
	return true
}

// Truth is what the agent itself recorded of its regenerations between two
// marks of the same agent process.
type Truth struct {
	From, To Mark
	// Count is the rise of cilium_endpoint_regenerations_total, all
	// outcomes; Seconds the rise of the sum of
	// cilium_endpoint_regeneration_time_stats_seconds{scope="total"}
	// (successful ones only, as cilium records it).
	Count   int
	Seconds float64
	// Logged is, per endpoint ID, the "total" of each completed
	// regeneration in the agent's debug log, in order: the agent's own
	// clock around each call.
	Logged map[uint16][]time.Duration
	Failed int // regenerations the agent logged as failed
}

// Truth reads what the agent recorded between a and b.
func (l *Lab) Truth(a, b Mark) (Truth, error) {
	if a.PID != b.PID {
		return Truth{}, fmt.Errorf("marks of two agent processes (%d, %d): cilium's counters restart with the process", a.PID, b.PID)
	}
	t := Truth{
		From: a, To: b,
		Count:   b.Metrics.Completed() - a.Metrics.Completed(),
		Seconds: b.Metrics.TotalSeconds - a.Metrics.TotalSeconds,
		Logged:  map[uint16][]time.Duration{},
	}
	f, err := os.Open(l.LogPath())
	if err != nil {
		return t, err
	}
	defer f.Close()
	var failed int
	err = scanRegenerations(io.NewSectionReader(f, a.LogOffset, b.LogOffset-a.LogOffset), func(ep uint16, total time.Duration, ok bool) {
		if ok {
			t.Logged[ep] = append(t.Logged[ep], total)
		} else {
			failed++
		}
	})
	t.Failed = failed
	return t, err
}

var (
	completedLine = regexp.MustCompile(`msg="(Completed endpoint regeneration|Regeneration of endpoint failed)"`)
	endpointAttr  = regexp.MustCompile(`\bendpointID=([0-9]+)`)
	totalAttr     = regexp.MustCompile(`\btotal="?([0-9.]+[a-zµ]+)`)
)

// scanRegenerations calls fn for each regeneration the agent's log says
// ended: "Completed endpoint regeneration" at debug level, with the
// endpoint and its phase times, "total" among them.
func scanRegenerations(r io.Reader, fn func(ep uint16, total time.Duration, ok bool)) error {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		m := completedLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		em := endpointAttr.FindStringSubmatch(line)
		if em == nil {
			return fmt.Errorf("agent log: regeneration line without endpointID: %s", line)
		}
		ep, err := strconv.ParseUint(em[1], 10, 16)
		if err != nil {
			return fmt.Errorf("agent log: %s: %w", line, err)
		}
		if m[1] != "Completed endpoint regeneration" {
			fn(uint16(ep), 0, false)
			continue
		}
		tm := totalAttr.FindStringSubmatch(line)
		if tm == nil {
			return fmt.Errorf("agent log: completed regeneration without total: %s", line)
		}
		total, err := time.ParseDuration(tm[1])
		if err != nil {
			return fmt.Errorf("agent log: total %q: %w", tm[1], err)
		}
		fn(uint16(ep), total, true)
	}
	return s.Err()
}

// Call is one traced (*Endpoint).regenerate call.
type Call struct {
	PID        int
	EndpointID uint16 // from the capture endpoint_id=e.ID
	Start      time.Time
	Duration   time.Duration
	// Timed runs from the call's entry to the entry of the
	// (*Endpoint).updateRegenerationStatistics it defers: the stretch
	// the agent's own clock covers, which starts just after the entry
	// and stops first thing in updateRegenerationStatistics. Zero when
	// that call was not traced inside this one.
	Timed      time.Duration
	Unfinished bool
}

// Check compares the traced regenerate calls that started between the
// truth's marks with what the agent recorded: the same number of calls in
// all and per endpoint, each call at least as long as the agent's own
// total for it (the agent's clock runs inside the traced call), and the
// traced time of the stretch the agent's clock covers (Call.Timed) within
// 1% of cilium's. The whole calls' sum is not held to 1%: after its clock
// stops the agent takes the endpoint's lock, sends its metrics and writes
// its log line inside the call, and on a busy machine that once took
// 7 ms, with nothing the agent records to bound it. The error names every
// difference.
func (t Truth) Check(calls []Call) error {
	var in []Call
	for _, c := range calls {
		if c.PID == t.From.PID && !c.Start.Before(t.From.Time) && c.Start.Before(t.To.Time) {
			in = append(in, c)
		}
	}
	var errs []error
	if len(in) != t.Count {
		errs = append(errs, fmt.Errorf("traced %d regenerate calls, cilium counted %d (cilium_endpoint_regenerations_total)", len(in), t.Count))
	}
	byEP := map[uint16][]Call{}
	var traced time.Duration
	for _, c := range in {
		if c.Unfinished {
			errs = append(errs, fmt.Errorf("endpoint %d: a regenerate call that started at %s is unfinished", c.EndpointID, c.Start.Format(time.TimeOnly)))
			continue
		}
		if c.Timed <= 0 || c.Timed > c.Duration {
			errs = append(errs, fmt.Errorf("endpoint %d: the regenerate call that started at %s has no traced updateRegenerationStatistics inside it", c.EndpointID, c.Start.Format(time.TimeOnly)))
			continue
		}
		byEP[c.EndpointID] = append(byEP[c.EndpointID], c)
		traced += c.Timed
	}
	eps := map[uint16]bool{}
	for ep := range byEP {
		eps[ep] = true
	}
	for ep := range t.Logged {
		eps[ep] = true
	}
	ids := make([]uint16, 0, len(eps))
	for ep := range eps {
		ids = append(ids, ep)
	}
	slices.Sort(ids)
	// How far each traced call's timed stretch was from the agent's own
	// timing of it, to show where a difference in the sums comes from.
	var excess []string
	var excessBy []time.Duration
	for _, ep := range ids {
		cs, logged := byEP[ep], t.Logged[ep]
		if len(cs) != len(logged) {
			errs = append(errs, fmt.Errorf("endpoint %d: traced %d regenerate calls, the agent logged %d completed", ep, len(cs), len(logged)))
			continue
		}
		// One endpoint's regenerations run one at a time, from its
		// own queue: the n-th to end is the n-th logged.
		sort.Slice(cs, func(i, j int) bool { return cs[i].Start.Add(cs[i].Duration).Before(cs[j].Start.Add(cs[j].Duration)) })
		for i, c := range cs {
			excess = append(excess, fmt.Sprintf("endpoint %d call %d: traced %s (%s in all), agent's total %s", ep, i+1, c.Timed, c.Duration, logged[i]))
			excessBy = append(excessBy, (c.Timed - logged[i]).Abs())
			if c.Duration < logged[i] {
				errs = append(errs, fmt.Errorf("endpoint %d: regenerate call %d traced %s, shorter than the agent's own total %s", ep, i+1, c.Duration, logged[i]))
			}
		}
	}
	if t.Failed == 0 && t.Seconds > 0 {
		if d := math.Abs(traced.Seconds()-t.Seconds) / t.Seconds; d > 0.01 {
			idx := make([]int, len(excess))
			for i := range idx {
				idx[i] = i
			}
			sort.Slice(idx, func(a, b int) bool { return excessBy[idx[a]] > excessBy[idx[b]] })
			var top []string
			for _, i := range idx[:min(3, len(idx))] {
				top = append(top, excess[i])
			}
			errs = append(errs, fmt.Errorf("traced %.3f s of regeneration up to updateRegenerationStatistics, cilium's regeneration_time_stats_seconds{scope=total} %.3f s: %.1f%% apart, more than 1%%; the calls furthest from the agent's own timing: %s",
				traced.Seconds(), t.Seconds, 100*d, strings.Join(top, "; ")))
		}
	}
	if t.Failed > 0 {
		errs = append(errs, fmt.Errorf("the agent logged %d failed regenerations: the lab is not healthy", t.Failed))
	}
	return errors.Join(errs...)
}

package session_test

import (
	"context"
	"errors"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
	"github.com/cilium-tracer/tracer/pkg/session"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testagent.Cleanup()
	os.Exit(code)
}

const policyDepth = 10

// run traces the whole workload of an agent started with args and returns
// every call the tracer reported and the agent's own report. Each call of
// a measured function carries its sequence number as attribute "seq".
func run(t *testing.T, bin string, args ...string) ([]calls.Call, testagent.Report, *session.Session, *testagent.Agent) {
	t.Helper()
	agent := testagent.Start(t, bin, append([]string{"-wait-start"}, args...)...)
	got, report, s := traceAll(t, agent, session.Config{Funcs: testagent.Counted, Stacks: true, Captures: []string{testagent.SeqCapture}})
	return got, report, s, agent
}

// traceAll attaches a session configured by cfg to agent, started with
// -wait-start, lets its workload begin and collects every call until it
// exits. The session is closed when the test ends.
func traceAll(t *testing.T, agent *testagent.Agent, cfg session.Config) ([]calls.Call, testagent.Report, *session.Session) {
	t.Helper()
	cfg.PID = agent.PID
	s, err := session.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	agent.Begin(t)

	var got []calls.Call
	// Only a guard against a hang: a million traced calls take over a
	// minute on two busy cores, where each trap costs up to 100 us.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	err = s.Run(ctx, func(c *calls.Call) { got = append(got, *c) })
	if !errors.Is(err, session.ErrTargetExited) {
		t.Fatalf("Run: %v, want the target to exit", err)
	}
	return got, agent.Wait(t, 10*time.Second), s
}

func TestTraceAgent(t *testing.T) {
	for _, v := range testagent.Matrix {
		t.Run(v.String(), func(t *testing.T) { traceAgent(t, testagent.Build(t, v), nil) })
	}
}

// traceAgent runs the core checks on the agent bin, with the probes in mode
// (nil: the kernel's best).
func traceAgent(t *testing.T, bin string, mode *kernel.Mode) {
	agent := testagent.Start(t, bin, "-wait-start", "-measure",
		"-workers", "50", "-iterations", "4", "-interval", "5ms", "-hot", "2000",
		"-policy-depth", strconv.Itoa(policyDepth), "-policy-sleep", "2ms",
		"-panic-every", "7")
	got, report, s := traceAll(t, agent, session.Config{Funcs: testagent.Counted, Stacks: true, Captures: []string{testagent.SeqCapture}, Mode: mode})
	if mode != nil && s.Set.Mode() != *mode {
		t.Fatalf("the probes ran as %v, want %v", s.Set.Mode(), *mode)
	}

	byFunc := map[string][]calls.Call{}
	ids := map[uint64]bool{}
	for _, c := range got {
		byFunc[c.Func] = append(byFunc[c.Func], c)
		if ids[c.ID] {
			t.Errorf("call ID %#x reported twice", c.ID)
		}
		ids[c.ID] = true
	}

	t.Run("counts", func(t *testing.T) { checkCounts(t, byFunc, report) })
	t.Run("recursion", func(t *testing.T) { checkRecursion(t, byFunc[testagent.ResolvePolicy]) })
	t.Run("durations", func(t *testing.T) { checkDurations(t, byFunc, report) })
	t.Run("stack growth", func(t *testing.T) { checkStackGrowth(t, s, byFunc) })
	t.Run("panic", func(t *testing.T) { checkPanics(t, s, byFunc[testagent.Allocate], report) })
	t.Run("stacks", func(t *testing.T) { checkStacks(t, byFunc[testagent.RegenerateBPF]) })
}

// The tracer sees exactly the calls the agent made: 50 goroutines call every
// traced function concurrently.
func checkCounts(t *testing.T, byFunc map[string][]calls.Call, r testagent.Report) {
	names := make([]string, 0, len(r.Counts))
	for name := range r.Counts {
		names = append(names, name)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != strings.Join(sortedCopy(testagent.Counted), ",") {
		t.Fatalf("agent counts %v, the test traces %v", names, testagent.Counted)
	}
	for _, name := range names {
		var done, unfinished uint64
		for _, c := range byFunc[name] {
			if c.Unfinished {
				unfinished++
			} else {
				done++
			}
		}
		want := r.Counts[name] - r.Panics[name]
		if done != want || unfinished != r.Panics[name] {
			t.Errorf("%s: traced %d returned + %d unfinished, agent counted %d returned + %d panicked",
				name, done, unfinished, want, r.Panics[name])
		}
		if r.Counts[name] == 0 {
			t.Errorf("%s: the agent never called it", name)
		}
	}
}

// Each level of the recursion is its own call, nested in the one above: a
// deeper stack, and a shorter duration, since the parent's probes fire
// before and after the child's.
func checkRecursion(t *testing.T, cs []calls.Call) {
	byID := map[uint64]calls.Call{}
	children := map[uint64][]calls.Call{}
	for _, c := range cs {
		byID[c.ID] = c
	}
	for _, c := range cs {
		if _, ok := byID[c.ParentID]; ok {
			children[c.ParentID] = append(children[c.ParentID], c)
		}
	}
	chains := 0
	for _, c := range cs {
		if _, nested := byID[c.ParentID]; nested {
			continue
		}
		chains++
		level := policyDepth
		for cur := c; ; level-- {
			kids := children[cur.ID]
			if len(kids) > 1 {
				t.Fatalf("call %#x has %d children", cur.ID, len(kids))
			}
			if len(kids) == 0 {
				break
			}
			if kids[0].Depth <= cur.Depth {
				t.Errorf("nested call at depth %d, its parent at %d", kids[0].Depth, cur.Depth)
			}
			if kids[0].Duration >= cur.Duration {
				t.Errorf("level %d lasted %v, its nested call %v", level, cur.Duration, kids[0].Duration)
			}
			cur = kids[0]
		}
		if level != 1 {
			t.Errorf("recursion chain ended at level %d, want 1", level)
		}
	}
	if chains == 0 || chains*policyDepth != len(cs) {
		t.Errorf("%d calls in %d chains, want chains of %d", len(cs), chains, policyDepth)
	}
}

// Every call the agent measured itself was traced, under its own sequence
// number, and lasted what the agent measured, give or take the probes'
// traps; a call that panicked was traced unfinished.
func checkDurations(t *testing.T, byFunc map[string][]calls.Call, r testagent.Report) {
	for _, fn := range testagent.Measured {
		measured := r.Durations[fn]
		if len(measured) == 0 {
			t.Errorf("%s: the agent measured no call", fn)
		}
		seen := map[string]bool{}
		// traced minus body: over all calls, and over those not held up
		lo, hi, quiet, heldUp := time.Duration(math.MaxInt64), time.Duration(0), time.Duration(0), 0
		for _, c := range byFunc[fn] {
			seq := attr(c, "seq")
			if seen[seq] {
				t.Errorf("%s: sequence number %s traced twice", fn, seq)
			}
			seen[seq] = true
			if c.Unfinished {
				if n, _ := strconv.ParseUint(seq, 10, 64); measured[n] != [2]int64{} {
					t.Errorf("%s call %s: unfinished, but the agent measured it returning", fn, seq)
				}
				continue
			}
			m, err := r.CheckDuration(fn, seq, c.Duration)
			if err != nil {
				t.Error(err)
			}
			if m.Running {
				continue
			}
			diff := c.Duration - m.Body
			if m.HeldUp {
				heldUp++
			} else {
				quiet = max(quiet, diff)
			}
			lo, hi = min(lo, diff), max(hi, diff)
		}
		for n := range measured {
			if !seen[strconv.FormatUint(n, 10)] {
				t.Errorf("%s call %d: measured by the agent, not traced", fn, n)
			}
		}
		t.Logf("%s: %d calls, traced minus body in [%v, %v], at most %v in the %d not held up outside the body",
			fn, len(measured), lo, hi, quiet, len(measured)-heldUp)
	}
}

// attr returns the value of a captured attribute, "" if absent.
func attr(c calls.Call, key string) string {
	for _, a := range c.Attrs {
		if a.Key == key {
			return a.Value
		}
	}
	return ""
}

// compileAndLoad grows its goroutine's stack while in flight, and still
// returns through a probed RET (its duration is checked with the others);
// DumpToSlice's 64 KiB frame makes its own prologue call morestack, so its
// entry fires twice per call.
func checkStackGrowth(t *testing.T, s *session.Session, byFunc map[string][]calls.Call) {
	counters, err := s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if n := counters[testagent.DumpToSlice].Reentered; n == 0 {
		t.Errorf("DumpToSlice: no entry re-fired after morestack (hits %d)", counters[testagent.DumpToSlice].Hits)
	}
	for _, c := range byFunc[testagent.CompileAndLoad] {
		if c.Unfinished {
			t.Errorf("compileAndLoad unfinished (%s)", c.Reason)
			break
		}
	}
}

// Panicked calls are reported unfinished, and nothing stays in flight.
func checkPanics(t *testing.T, s *session.Session, cs []calls.Call, r testagent.Report) {
	if r.Panics[testagent.Allocate] == 0 {
		t.Fatal("the agent made no panicking call")
	}
	for _, c := range cs {
		if c.Unfinished && !strings.Contains(c.Reason, "panic") {
			t.Errorf("unfinished call with reason %q, want a panic", c.Reason)
		}
	}
	if n, err := s.Set.InFlight(); err != nil || n != 0 {
		t.Errorf("goroutine table holds %d entries after the session (err %v)", n, err)
	}
}

// The stack taken at entry has the immediate caller, which a frame-pointer
// walk at entry misses, and the inlined frame between them.
func checkStacks(t *testing.T, cs []calls.Call) {
	if len(cs) == 0 {
		t.Fatal("no regenerateBPF calls")
	}
	for _, c := range cs {
		var names []string
		for _, f := range c.Stack {
			names = append(names, f.Func)
		}
		if len(c.Stack) < 4 || c.Stack[0].Func != testagent.RegenerateBPF ||
			c.Stack[1].Func != testagent.RealizeBPFState || !c.Stack[1].Inlined || c.Stack[2].Func != testagent.Regenerate {
			t.Fatalf("stack %q, want regenerateBPF, realizeBPFState (inlined), regenerate, ...", names)
		}
	}
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}

// Tracing changes nothing the target computes: over a million traced calls
// its output is byte for byte what it prints untraced, and every call is
// seen.
func TestOutputUnchanged(t *testing.T) {
	const n = 1_000_000
	bin := testagent.Build(t, testagent.Variant{Stripped: true, PIE: true})
	args := []string{"-hot", strconv.Itoa(n), "-workers", "0"}

	plain := testagent.Start(t, bin, append([]string{"-wait-start"}, args...)...)
	plain.Begin(t)
	plain.Wait(t, time.Minute)

	start := time.Now()
	got, report, s, traced := run(t, bin, args...)
	elapsed := time.Since(start)
	counters, err := s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	// On a loaded machine the reader can fall behind the 4 MiB ring
	// buffer; the calls that found it full are counted, not lost unseen.
	c := counters[testagent.CTLookup]
	if c.Hits != n || c.Returns != n {
		t.Errorf("BPF counted %d entries, %d returns; want %d calls (counters %+v)", c.Hits, c.Returns, n, c)
	}
	done := 0
	for _, c := range got {
		if c.Func == testagent.CTLookup && !c.Unfinished {
			done++
		}
	}
	if uint64(done)+c.Dropped != n || report.Counts[testagent.CTLookup] != n {
		t.Errorf("traced %d calls + %d dropped, the agent made %d, want %d", done, c.Dropped, report.Counts[testagent.CTLookup], n)
	}
	if a, b := withoutReady(plain.Output()), withoutReady(traced.Output()); a != b {
		t.Errorf("output changed by tracing:\nuntraced:\n%s\ntraced:\n%s", a, b)
	}
	t.Logf("%d traced calls in %v", n, elapsed)
}

func withoutReady(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "ready pid=") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// The BPF filters: a minimum duration drops the short calls before they
// reach user space, never a call whose body alone lasted that long by the
// agent's own clock; and 1-in-N sampling keeps about one call in N.
func TestFilters(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	agent := testagent.Start(t, bin, "-wait-start", "-measure", "-workers", "4", "-iterations", "50",
		"-interval", "1ms", "-policy-depth", "10", "-policy-sleep", "1ms", "-bpf-sleep", "1ms")

	const minDuration = 5 * time.Millisecond
	cfg := session.Config{PID: agent.PID, Funcs: []string{testagent.ResolvePolicy}, Captures: []string{testagent.SeqCapture}}
	cfg.MinDuration = minDuration
	s, err := session.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A second set on the same process samples upsertLocked.
	cfg = session.Config{PID: agent.PID, Funcs: []string{testagent.Upsert}}
	cfg.SampleEvery = 4
	sampled, err := session.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sampled.Close()
	agent.Begin(t)

	var short, long, upserts int
	reported := map[string]time.Duration{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sampled.Run(context.Background(), func(c *calls.Call) {
			if !c.Unfinished {
				upserts++
			}
		})
	}()
	s.Run(context.Background(), func(c *calls.Call) {
		if c.Duration < minDuration {
			short++
		} else {
			long++
		}
		reported[attr(*c, "seq")] = c.Duration
	})
	<-done
	report := agent.Wait(t, 10*time.Second)
	for n, d := range report.Durations[testagent.ResolvePolicy] {
		seq := strconv.FormatUint(n, 10)
		traced, ok := reported[seq]
		if !ok {
			if body := time.Duration(d[0]); body >= minDuration {
				t.Errorf("call %s filtered out, its body lasted %v", seq, body)
			}
			continue
		}
		if _, err := report.CheckDuration(testagent.ResolvePolicy, seq, traced); err != nil {
			t.Error(err)
		}
	}

	counters, err := s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	c := counters[testagent.ResolvePolicy]
	if short != 0 || long == 0 || c.Filtered == 0 || uint64(long)+c.Filtered != report.Counts[testagent.ResolvePolicy] {
		t.Errorf("min duration: %d short and %d long calls reported, %d filtered in BPF, the agent made %d",
			short, long, c.Filtered, report.Counts[testagent.ResolvePolicy])
	}
	sc, err := sampled.Counters()
	if err != nil {
		t.Fatal(err)
	}
	n := report.Counts[testagent.Upsert]
	// 800 calls sampled 1 in 4: 200 expected, outside [120, 280] has
	// odds below one in a million.
	if upserts < 120 || upserts > 280 || sc[testagent.Upsert].Hits != n || sc[testagent.Upsert].Skipped+uint64(upserts) != n {
		t.Errorf("sampling 1 in 4 of %d calls: %d reported, counters %+v", n, upserts, sc[testagent.Upsert])
	}
}

// Calls that do not return for longer than ExpireAfter are reported
// unfinished and leave the goroutine table while tracing goes on.
func TestExpire(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	// The calls sleep far longer than the test waits: whenever the
	// sweep runs on a loaded machine, they are still in flight.
	agent := testagent.Start(t, bin, "-wait-start", "-workers", "2", "-iterations", "1", "-bpf-sleep", "10m", "-policy-depth", "0")
	s, err := session.Start(session.Config{PID: agent.PID, Funcs: []string{testagent.RegenerateBPF}, ExpireAfter: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	agent.Begin(t)

	var got []calls.Call
	// Only a guard against a hang: a million traced calls take over a
	// minute on two busy cores, where each trap costs up to 100 us.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := s.Run(ctx, func(c *calls.Call) {
		got = append(got, *c)
		if len(got) == 2 {
			cancel()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d calls reported, want the 2 expired ones", len(got))
	}
	for _, c := range got {
		if !c.Unfinished || !strings.Contains(c.Reason, "too long") || c.Duration < time.Second {
			t.Errorf("call %s: unfinished %v (%s) after %v, want expired after at least 1s", c.Func, c.Unfinished, c.Reason, c.Duration)
		}
	}
	if n, _ := s.Set.InFlight(); n != 0 {
		t.Errorf("%d goroutines still in the table after expiry", n)
	}
}

// A call left behind by a panic is not paired with the return of a later,
// unsampled call at the same depth: every completed call is one the agent
// measured returning, and lasted what the agent measured. A wrong pairing
// would carry the panicked call's sequence number and last a whole
// regeneration interval.
func TestSamplingAfterPanic(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	agent := testagent.Start(t, bin, "-wait-start", "-measure", "-workers", "8", "-iterations", "40", "-interval", "5ms",
		"-policy-depth", "0", "-panic-every", "3")
	cfg := session.Config{PID: agent.PID, Funcs: []string{testagent.Allocate}, Captures: []string{testagent.SeqCapture}}
	cfg.SampleEvery = 2
	s, err := session.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	agent.Begin(t)
	var done, unfinished int
	var completed []calls.Call
	err = s.Run(context.Background(), func(c *calls.Call) {
		if c.Unfinished {
			unfinished++
			return
		}
		done++
		completed = append(completed, *c)
	})
	if !errors.Is(err, session.ErrTargetExited) {
		t.Fatal(err)
	}
	report := agent.Wait(t, 10*time.Second)
	for _, c := range completed {
		if _, err := report.CheckDuration(c.Func, attr(c, "seq"), c.Duration); err != nil {
			t.Error(err)
		}
	}
	if done == 0 || unfinished == 0 || uint64(done+unfinished) > report.Counts[testagent.Allocate] {
		t.Errorf("%d completed and %d unfinished calls reported of %d made", done, unfinished, report.Counts[testagent.Allocate])
	}
}

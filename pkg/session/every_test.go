package session_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/container"
	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
	"github.com/cilium-tracer/tracer/pkg/session"
)

// everyProcess traces every process that runs bin, as Config.PID 0 does,
// until the test calls stop. It returns what the session reported: the
// calls, and the processes as they were first seen and as they exited.
type everyProcess struct {
	s      *session.Session
	cancel context.CancelFunc
	done   chan error

	mu     sync.Mutex
	calls  []calls.Call
	seen   map[int]session.Process
	exited map[int]session.Process
}

func traceEveryProcess(t *testing.T, bin string, funcs ...string) *everyProcess {
	t.Helper()
	return traceEvery(t, session.Config{Binary: bin, Funcs: funcs, Stacks: true, Captures: []string{testagent.SeqCapture}})
}

// traceEvery is traceEveryProcess with cfg, whose Binary names the file.
func traceEvery(t *testing.T, cfg session.Config) *everyProcess {
	t.Helper()
	e := &everyProcess{done: make(chan error, 1), seen: map[int]session.Process{}, exited: map[int]session.Process{}}
	cfg.Process = func(p session.Process) {
		e.mu.Lock()
		defer e.mu.Unlock()
		if p.Exited.IsZero() {
			e.seen[p.PID] = p
		} else {
			e.exited[p.PID] = p
		}
	}
	s, err := session.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e.s = s
	var ctx context.Context
	ctx, e.cancel = context.WithCancel(context.Background())
	go func() {
		e.done <- s.Run(ctx, func(c *calls.Call) {
			e.mu.Lock()
			e.calls = append(e.calls, *c)
			e.mu.Unlock()
		})
	}()
	t.Cleanup(e.cancel)
	return e
}

// stop ends the session once it has seen every process in pids exit, and
// returns the calls.
func (e *everyProcess) stop(t *testing.T, pids []int) []calls.Call {
	t.Helper()
	// Only a guard against a hang: the exits come through pidfds.
	deadline := time.Now().Add(time.Minute)
	for {
		e.mu.Lock()
		n := 0
		for _, pid := range pids {
			if _, ok := e.exited[pid]; ok {
				n++
			}
		}
		e.mu.Unlock()
		if n == len(pids) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the session saw %d of %d processes exit", n, len(pids))
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.cancel()
	if err := <-e.done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls
}

// The probes are on the file: every process started after they were
// attached is traced, each call is attributed to its own process, and the
// completed calls equal the sum of the processes' own counts, exactly.
// PIE or not (each process loads a PIE elsewhere), stripped or not.
func TestEveryProcess(t *testing.T) {
	for _, v := range testagent.Matrix {
		if v.Toolchain != "" {
			continue
		}
		t.Run(v.String(), func(t *testing.T) {
			bin := testagent.Build(t, v)
			if mode, err := kernel.Probe().Mode(); err == nil && !mode.Cookies && v.PIE {
				// Each process loads a PIE elsewhere: without cookies
				// the probes cannot tell which site fired.
				_, err := session.Start(session.Config{Binary: bin, Funcs: testagent.Counted})
				if err == nil || !strings.Contains(err.Error(), "needs attach cookies") {
					t.Fatalf("Start on %v without attach cookies: %v, want the need for them said", v, err)
				}
				return
			}
			e := traceEveryProcess(t, bin, testagent.Counted...)
			args := []string{"-workers", "4", "-iterations", "3", "-interval", "1ms", "-policy-depth", "3", "-panic-every", "0", "-hot", "50"}
			// Two run side by side for a while, their calls
			// interleaved, then three one after another.
			var pids []int
			reports := map[int]testagent.Report{}
			long := append(slices.Clone(args), "-iterations", "20", "-interval", "5ms")
			a, b := testagent.Start(t, bin, long...), testagent.Start(t, bin, long...)
			reports[a.PID], reports[b.PID] = a.Wait(t, time.Minute), b.Wait(t, time.Minute)
			pids = append(pids, a.PID, b.PID)
			for range 3 {
				a := testagent.Start(t, bin, args...)
				reports[a.PID] = a.Wait(t, time.Minute)
				pids = append(pids, a.PID)
			}
			got := e.stop(t, pids)

			counts := map[int]map[string]uint64{}
			for _, c := range got {
				if c.Unfinished {
					t.Errorf("pid %d: %s unfinished: %s", c.PID, c.Func, c.Reason)
					continue
				}
				if counts[c.PID] == nil {
					counts[c.PID] = map[string]uint64{}
				}
				counts[c.PID][c.Func]++
			}
			total := map[string]uint64{}
			for pid, r := range reports {
				for _, fn := range testagent.Counted {
					if got, want := counts[pid][fn], r.Counts[fn]; got != want {
						t.Errorf("pid %d: %s: traced %d calls, the process counted %d", pid, fn, got, want)
					}
					total[fn] += r.Counts[fn]
				}
				// A process that exited before its first record was
				// read is named by its PID alone.
				p, ok := e.seen[pid]
				switch {
				case !ok:
					t.Errorf("pid %d: never named", pid)
				case p.Err == nil && p.Comm != "cilium-agent":
					t.Errorf("pid %d: named %q, want cilium-agent", pid, p.Comm)
				case p.Err != nil && !errors.Is(p.Err, container.ErrNoProcess):
					t.Errorf("pid %d: %v", pid, p.Err)
				}
				if x := e.exited[pid]; x.ExitKnown && x.ExitStatus != 0 {
					t.Errorf("pid %d: exit status %d, want 0", pid, x.ExitStatus)
				}
			}
			for pid := range counts {
				if _, ok := reports[pid]; !ok {
					t.Errorf("calls attributed to pid %d, which the test did not start", pid)
				}
			}
			for _, fn := range testagent.Counted {
				if total[fn] == 0 {
					t.Errorf("%s: never called", fn)
				}
			}
			checkStacksNamed(t, e.s, got)
		})
	}
}

// Every process's stacks are symbolized with its own load address: the
// traced function's frame is first. A call without a stack is one the
// probes counted as such, and every process has named stacks.
func checkStacksNamed(t *testing.T, s *session.Session, got []calls.Call) {
	t.Helper()
	stackless := map[string]uint64{}
	named := map[int]bool{}
	for _, c := range got {
		if len(c.Stack) == 0 {
			stackless[c.Func]++
			continue
		}
		if c.Stack[0].Func != c.Func {
			t.Fatalf("pid %d: %s: first frame %s", c.PID, c.Func, c.Stack[0].Func)
		}
		named[c.PID] = true
	}
	counters, err := s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for fn, n := range stackless {
		c := counters[fn]
		if n > c.Contended+c.Unstacked {
			t.Errorf("%s: %d calls without stack, the probes counted %d contended and %d unstacked", fn, n, c.Contended, c.Unstacked)
		} else {
			t.Logf("%s: %d calls without stack (%d contended, %d unstacked)", fn, n, c.Contended, c.Unstacked)
		}
	}
	for _, c := range got {
		if !named[c.PID] {
			t.Fatalf("pid %d: no call with its stack", c.PID)
		}
	}
}

// The calls in flight in a process that exits are reported unfinished
// when it does, as for a single target, and leave the goroutine table.
func TestEveryProcessExit(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	// Only the call that sleeps: once the table holds a goroutine, that
	// call is in flight.
	e := traceEveryProcess(t, bin, testagent.ResolvePolicy)
	a := testagent.Start(t, bin, "-workers", "1", "-iterations", "1", "-policy-depth", "1", "-policy-sleep", "1h")
	// Ground truth from the probes: the call is in flight.
	for deadline := time.Now().Add(time.Minute); ; {
		n, err := e.s.Set.InFlight()
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no call in flight after a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := a.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	got := e.stop(t, []int{a.PID})
	unfinished := map[string]string{}
	for _, c := range got {
		if c.PID != a.PID || !c.Unfinished {
			t.Errorf("pid %d: %s: unfinished %v, want only the killed process's calls, unfinished", c.PID, c.Func, c.Unfinished)
		}
		unfinished[c.Func] = c.Reason
	}
	if r := unfinished[testagent.ResolvePolicy]; r != probe.Exited.String() {
		t.Errorf("%s: reason %q, want %q", testagent.ResolvePolicy, r, probe.Exited.String())
	}
	if n, _ := e.s.Set.InFlight(); n != 0 {
		t.Errorf("%d goroutines left in the goroutine table", n)
	}
}

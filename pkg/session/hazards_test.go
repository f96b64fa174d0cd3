package session_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/session"
)

// Functions of the example agent's torture workloads (pkg/torture).
const (
	tortureTraced  = "github.com/cilium/cilium/pkg/torture.Traced"
	tortureCaller  = "github.com/cilium/cilium/pkg/torture.caller%02d"
	tortureStep    = "github.com/cilium/cilium/pkg/torture.Step"
	tortureRecurse = "github.com/cilium/cilium/pkg/torture.Recurse"
)

// The per-CPU scratch buffers that hold a stack and the captured values
// while an entry probe builds them are never shared by two probes at once:
// 16 workers, each calling the traced function from a caller of its own
// with its number as the argument, on 16 threads over 2 CPUs, so probes of
// many threads share each CPU. Every call's captured worker number names the
// caller in its stack. On a kernel that preempts a running BPF program
// (preempt=full) the probes interleave on a CPU; elsewhere the test still
// holds.
func TestScratchPerCall(t *testing.T) {
	const workers, perWorker = 16, 1000
	bin := testagent.Build(t, testagent.Variant{})
	cmd := exec.Command(bin, "-wait-start", "-workers", "0",
		"-scratch-workers", fmt.Sprint(workers), "-scratch-calls", fmt.Sprint(perWorker))
	cmd.Env = append(os.Environ(), "GOMAXPROCS=16")
	agent := testagent.StartCmd(t, cmd)
	got, report, s := traceAll(t, agent, session.Config{Funcs: []string{tortureTraced}, Stacks: true, Captures: []string{"worker=worker"}})
	counters, err := s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	c := counters[tortureTraced]

	var done, bare uint64
	perCaller := map[string]int{}
	for _, call := range got {
		if call.Unfinished {
			t.Errorf("unfinished call: %s", call.Reason)
			continue
		}
		done++
		if len(call.Stack) == 0 && len(call.Attrs) == 1 && call.Attrs[0].Value == "" {
			bare++ // the scratch buffer was busy: neither was taken
			continue
		}
		if len(call.Attrs) != 1 || call.Attrs[0].Value == "" || len(call.Stack) < 2 {
			t.Fatalf("call with attributes %v and %d stack frames", call.Attrs, len(call.Stack))
		}
		var w int
		fmt.Sscan(call.Attrs[0].Value, &w)
		want := fmt.Sprintf(tortureCaller, w)
		if call.Stack[0].Func != tortureTraced || call.Stack[1].Func != want {
			t.Fatalf("worker=%s called from %s, want %s", call.Attrs[0].Value, call.Stack[1].Func, want)
		}
		// Traced starts with PUSH %rbp, where kernels >= 6.11 put the
		// caller into the stack walk themselves: it must not come twice.
		if len(call.Stack) > 2 && call.Stack[2].Func == want {
			t.Fatalf("worker=%s: caller %s twice in the stack", call.Attrs[0].Value, want)
		}
		perCaller[want]++
	}
	// Under emulation (the kernel matrix) the reader may fall behind and
	// the ring buffer fill: BPF counts each call it could not report.
	if made := report.Counts[tortureTraced]; made != workers*perWorker || done+c.Dropped != made || done == 0 {
		t.Errorf("traced %d calls and %d dropped, the agent made %d, want %d", done, c.Dropped, made, workers*perWorker)
	}
	// A call that found the buffer busy may have been dropped too.
	if bare > c.Contended || bare+c.Dropped < c.Contended {
		t.Errorf("%d calls without stack and values, BPF counted %d with the scratch buffer busy and %d dropped", bare, c.Contended, c.Dropped)
	}
	for caller, n := range perCaller {
		if uint64(n)+bare+c.Dropped < perWorker {
			t.Errorf("%s: %d calls, want %d", caller, n, perWorker)
		}
	}
	t.Logf("%d calls, %d found the scratch buffer busy, %d dropped", done, c.Contended, c.Dropped)
}

// A RET is paired only with a frame of the same goroutine. Goroutines end
// through runtime.Goexit inside a traced call while its entry probe is
// paused; new goroutines, on the same g structures, call the function at
// the same depth and return through the still attached RET probe. The old
// frames must end unfinished, never paired with those returns.
func TestGoroutineReuse(t *testing.T) {
	const n = 50
	bin := testagent.Build(t, testagent.Variant{})
	cmd := exec.Command(bin, "-wait-start", "-workers", "0", "-goexit-workers", fmt.Sprint(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	agent := testagent.StartCmd(t, cmd)
	s, err := session.Start(session.Config{PID: agent.PID, Funcs: []string{tortureStep}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	agent.Begin(t)

	var (
		mu  sync.Mutex
		got []calls.Call
	)
	ran := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		ran <- s.Run(ctx, func(c *calls.Call) {
			mu.Lock()
			got = append(got, *c)
			mu.Unlock()
		})
	}()
	var inFlight uint64
	for deadline := time.Now().Add(30 * time.Second); inFlight == 0; time.Sleep(10 * time.Millisecond) {
		for _, l := range agent.Lines() {
			fmt.Sscanf(l, "goexit in-flight calls=%d", &inFlight)
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent's goroutines never got into Step")
		}
	}
	s.Pause(0)
	paused := time.Now()
	if _, err := io.WriteString(stdin, "go on\n"); err != nil {
		t.Fatal(err)
	}
	if err := <-ran; !errors.Is(err, session.ErrTargetExited) {
		t.Fatalf("Run: %v, want the target to exit", err)
	}
	report := agent.Wait(t, 10*time.Second)
	if report.Counts[tortureStep] != 4*n || report.Panics[tortureStep] != n || inFlight != 2*n {
		t.Fatalf("the agent made %d calls (%d in flight at the pause), %d ended by Goexit; want %d (%d), %d",
			report.Counts[tortureStep], inFlight, report.Panics[tortureStep], 4*n, 2*n, n)
	}

	// Before the pause n calls returned and n were in flight.
	var done, unfinished, reused int
	for _, c := range got {
		if c.Unfinished {
			unfinished++
			if strings.Contains(c.Reason, "unwound") {
				reused++
			}
			continue
		}
		done++
		if c.Start.Add(c.Duration).After(paused) {
			t.Errorf("call %#x on goroutine %d returned %v after the pause, %v after its start: paired with a return of another goroutine",
				c.ID, c.Goroutine, c.Start.Add(c.Duration).Sub(paused), c.Duration)
		}
	}
	if done != n || unfinished != n {
		t.Errorf("traced %d returned and %d unfinished calls, want %d and %d", done, unfinished, n, n)
	}
	if left, err := s.Set.InFlight(); err != nil || left != 0 {
		t.Errorf("goroutine table holds %d entries after the session (err %v)", left, err)
	}
	// Without a g reused at the same depth the test proves nothing.
	if reused == 0 {
		t.Error("no frame of a dead goroutine met a return on its reused g")
	}
	t.Logf("%d of %d frames left by Goexit met a return on their reused g", reused, n)
}

// A recursion deeper than the frames a goroutine can hold in flight: the
// outermost probe.MaxNesting levels are traced, the deeper ones counted
// untracked, and the two add up to the calls the agent made, exactly. Some
// levels of torture.Recurse run their entry twice (morestack), also beyond
// the frames held: such a call still counts once.
func TestDeepRecursion(t *testing.T) {
	if probe.MaxNesting < 64 {
		t.Errorf("%d traced calls in flight per goroutine, want at least 64", probe.MaxNesting)
	}
	bin := testagent.Build(t, testagent.Variant{})
	for _, tc := range []struct {
		fn          string
		depth, runs int
		args        []string
	}{
		{testagent.ResolvePolicy, 120, 4 * 3, []string{"-workers", "4", "-iterations", "3", "-interval", "1ms",
			"-policy-depth", "120", "-policy-sleep", "100us", "-panic-every", "0"}},
		{tortureRecurse, 150, 20, []string{"-workers", "0", "-recurse-depth", "150", "-recurse-times", "20"}},
	} {
		t.Run(tc.fn[strings.LastIndex(tc.fn, ".")+1:], func(t *testing.T) {
			agent := testagent.Start(t, bin, append([]string{"-wait-start"}, tc.args...)...)
			got, report, s := traceAll(t, agent, session.Config{Funcs: []string{tc.fn}})
			counters, err := s.Counters()
			if err != nil {
				t.Fatal(err)
			}
			c := counters[tc.fn]

			made := report.Counts[tc.fn]
			var done, unfinished uint64
			perRoot := map[uint64]int{}
			for _, call := range got {
				if call.Unfinished {
					unfinished++
				} else {
					done++
				}
				perRoot[call.RootID]++
			}
			if made != uint64(tc.runs*tc.depth) || done+unfinished+c.Untracked != made {
				t.Errorf("%d returned + %d unfinished + %d untracked calls, the agent made %d", done, unfinished, c.Untracked, made)
			}
			if done != uint64(tc.runs*probe.MaxNesting) || unfinished != 0 || len(perRoot) != tc.runs {
				t.Errorf("%d returned and %d unfinished calls in %d recursions, want the outermost %d of each of %d",
					done, unfinished, len(perRoot), probe.MaxNesting, tc.runs)
			}
			for root, k := range perRoot {
				if k != probe.MaxNesting {
					t.Errorf("recursion %#x: %d nested calls traced, want %d", root, k, probe.MaxNesting)
				}
			}
			if tc.fn == tortureRecurse && c.Reentered == 0 {
				t.Error("no entry of Recurse ran twice: the stack never grew")
			}
			t.Logf("counters %+v", c)
		})
	}
}

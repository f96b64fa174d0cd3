package session_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/session"
)

// Calls that return while the probes are being removed are reported, none
// lost: every call of resolvePolicyLocked the agent made comes back,
// completed or unfinished. The agent's 2000 goroutines each hold 10 nested
// calls and are frozen (SIGSTOP) until the detach starts; their returns
// then come while or after the uprobes of about 400 functions are being
// removed. With a value captured, each record takes 368 bytes: the 4 MiB
// ring buffer holds 11,400 of them, less than what returns during a detach
// that takes long.
func TestDetachWhileReturning(t *testing.T) {
	const (
		workers = 2000
		depth   = 10
		made    = workers * depth
		// Long enough for every goroutine to enter the next level
		// before the first one leaves it: each level's entries wait
		// for the CPU behind those of the other goroutines.
		levelSleep = time.Second
	)
	bin := testagent.Build(t, testagent.Variant{})
	agent := testagent.Start(t, bin, "-wait-start", "-workers", strconv.Itoa(workers), "-iterations", "1",
		"-policy-depth", strconv.Itoa(depth), "-policy-sleep", levelSleep.String(), "-panic-every", "0")

	// Functions the workload does not call, for a detach that takes time.
	funcs := []string{testagent.ResolvePolicy, "encoding/json.*", "flag.*", "strconv.*", "unicode/*", "errors.*", "os.*", "slices.*", "internal/poll.*", "syscall.*"}
	var uprobes int
	cfg := session.Config{PID: agent.PID, Funcs: funcs, Captures: []string{"depth=depth"}}
	cfg.Detaching = func(n int) func() {
		uprobes = n
		// The calls return from now on.
		if err := syscall.Kill(agent.PID, syscall.SIGCONT); err != nil {
			t.Error(err)
		}
		return func() {}
	}
	s, err := session.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resolve := -1
	for id, p := range s.Set.Probes() {
		if p.Func.Name == testagent.ResolvePolicy {
			resolve = id
		}
	}
	agent.Begin(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var done, unfinished uint64
	ran := make(chan error, 1)
	go func() {
		ran <- s.Run(ctx, func(c *calls.Call) {
			if c.Func != testagent.ResolvePolicy {
				return
			}
			if c.Unfinished {
				unfinished++
			} else {
				done++
			}
		})
	}()

	// Every call entered, the innermost ones still asleep: freeze them.
	// The counters are read again once every thread has stopped, as a
	// re-entry may have been half counted the first time.
	deadline := time.Now().Add(time.Minute)
	var before probe.Counters
	for frozen := false; !frozen; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d calls entered after a minute", before.Hits-before.Reentered, made)
		}
		time.Sleep(5 * time.Millisecond)
		if before = counters(t, s, resolve); before.Hits-before.Reentered != made {
			continue
		}
		if err := syscall.Kill(agent.PID, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		waitStopped(t, agent.PID)
		if before = counters(t, s, resolve); before.Hits-before.Reentered == made {
			frozen = true
		} else if err := syscall.Kill(agent.PID, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	// Their sleeps end while frozen: they all return as soon as the
	// agent runs again.
	time.Sleep(levelSleep)
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	report := agent.Wait(t, time.Minute)

	if uprobes < 800 {
		t.Errorf("%d uprobes detached, want many", uprobes)
	}
	after := counters(t, s, resolve)
	if n := report.Counts[testagent.ResolvePolicy]; n != made || done+unfinished != n || after.Dropped != 0 {
		t.Errorf("agent made %d calls (want %d); traced %d completed + %d unfinished, %d records dropped",
			n, made, done, unfinished, after.Dropped)
	}
	// Those that had not returned when the agent froze returned during
	// the detach or after it.
	during := done - before.Returns
	if during == 0 {
		t.Errorf("no call completed during the detach (%d before, %d unfinished): the test did not test it", before.Returns, unfinished)
	}
	t.Logf("%d uprobes; calls completed: %d before the detach, %d during it; %d unfinished", uprobes, before.Returns, during, unfinished)
}

func counters(t *testing.T, s *session.Session, id int) probe.Counters {
	t.Helper()
	cs, err := s.Set.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return cs[id]
}

// waitStopped waits until every thread of pid is stopped by a signal.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(time.Millisecond) {
		stats, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		if err != nil || len(stats) == 0 {
			t.Fatalf("threads of %d: %v", pid, err)
		}
		running := 0
		for _, st := range stats {
			b, err := os.ReadFile(st)
			// The state follows the command name in parentheses.
			if i := bytes.LastIndexByte(b, ')'); err != nil || i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
				running++
			}
		}
		if running == 0 {
			return
		}
	}
	t.Fatalf("%d not stopped after 10s", pid)
}

// Pausing, detaching and attaching again one probe of a group that shares
// links gives the others new links before the old ones close: the other
// functions lose no call. Each json function is taken out of the group in
// turn while the agent's workload runs; the agent's functions are counted
// exactly.
func TestRegroupLosesNothing(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	agent := testagent.Start(t, bin, "-wait-start", "-workers", "8", "-iterations", "300", "-interval", "10ms",
		"-hot", "300000", "-hot-background", "-policy-depth", "3", "-policy-sleep", "1ms", "-panic-every", "0")

	var (
		mu      sync.Mutex
		stopped bool
	)
	cfg := session.Config{PID: agent.PID, Funcs: append([]string{"encoding/json.*"}, testagent.Counted...)}
	cfg.Detaching = func(int) func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
		return func() {}
	}
	s, err := session.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var toggle []int
	for id, p := range s.Set.Probes() {
		if strings.HasPrefix(p.Func.Name, "encoding/json.") {
			toggle = append(toggle, id)
		}
	}
	agent.Begin(t)

	var got []calls.Call
	ran := make(chan error, 1)
	go func() { ran <- s.Run(context.Background(), func(c *calls.Call) { got = append(got, *c) }) }()

	regrouped := 0
	for _, id := range toggle {
		mu.Lock()
		for _, op := range []func(int) error{s.Pause, s.Detach, s.Reattach} {
			if stopped {
				break
			}
			if err := op(id); err != nil {
				// Once the agent is gone its executable cannot be
				// attached to.
				if _, gone := os.Stat(fmt.Sprintf("/proc/%d/exe", agent.PID)); gone == nil {
					t.Error(err)
				}
				stopped = true
			}
		}
		if !stopped {
			regrouped++
		}
		mu.Unlock()
	}
	if err := <-ran; !errors.Is(err, session.ErrTargetExited) {
		t.Fatalf("Run: %v, want the target to exit", err)
	}
	report := agent.Wait(t, time.Minute)
	if regrouped < 10 {
		t.Fatalf("only %d probes taken out of the group before the agent exited", regrouped)
	}
	byFunc := map[string][]calls.Call{}
	for _, c := range got {
		byFunc[c.Func] = append(byFunc[c.Func], c)
	}
	checkCounts(t, byFunc, report)
	t.Logf("%d probes taken out of the group in turn; %d calls", regrouped, len(got))
}

package session_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
	"github.com/cilium-tracer/tracer/pkg/session"
)

// The fallbacks for older kernels, forced on this one, pass the core checks
// and the captures: perf uprobes with attach cookies (Linux 5.15 to 6.5, and
// 6.6 to 6.9 whose uprobe_multi filters PIDs by thread), and perf uprobes
// without cookies, which run the objects built for Linux 5.10 and find the
// probe by the address that fired: PIE moves that address, and a probe
// detached and attached again takes its addresses out of the map and puts
// them back.
func TestFallbackModes(t *testing.T) {
	for _, mode := range []kernel.Mode{{Cookies: true}, {}} {
		t.Run(mode.String(), func(t *testing.T) {
			for _, v := range []testagent.Variant{{}, {Stripped: true, PIE: true}} {
				t.Run(v.String(), func(t *testing.T) { traceAgent(t, testagent.Build(t, v), &mode) })
			}
			t.Run("captures", func(t *testing.T) {
				v := testagent.Variant{PIE: true}
				cfg := session.Config{Funcs: []string{testagent.RegenerateBPF, testagent.Allocate, testagent.ResolvePolicy}, Captures: captures, Mode: &mode}
				got, agent := runCaptures(t, testagent.Build(t, v), cfg)
				checkCaptures(t, got, agent)
			})
			t.Run("reattached", func(t *testing.T) { reattached(t, mode) })
		})
	}
}

// reattached detaches every probe and attaches it again, and pauses and
// resumes each, before the agent's workload: every call is still counted.
func reattached(t *testing.T, mode kernel.Mode) {
	agent := testagent.Start(t, testagent.Build(t, testagent.Variant{}), "-wait-start",
		"-workers", "8", "-iterations", "4", "-interval", "2ms", "-hot", "500", "-policy-depth", "3", "-policy-sleep", "1ms")
	s, err := session.Start(session.Config{PID: agent.PID, Funcs: testagent.Counted, Mode: &mode})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for id := range s.Set.Probes() {
		for _, op := range []func(int) error{s.Detach, s.Reattach, s.Pause, s.Reattach} {
			if err := op(id); err != nil {
				t.Fatal(err)
			}
		}
	}
	agent.Begin(t)
	var got []calls.Call
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.Run(ctx, func(c *calls.Call) { got = append(got, *c) }); !errors.Is(err, session.ErrTargetExited) {
		t.Fatalf("Run: %v, want the target to exit", err)
	}
	byFunc := map[string][]calls.Call{}
	for _, c := range got {
		byFunc[c.Func] = append(byFunc[c.Func], c)
	}
	checkCounts(t, byFunc, agent.Wait(t, 10*time.Second))
}

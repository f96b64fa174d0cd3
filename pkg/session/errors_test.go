package session_test

import (
	"testing"

	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
	"github.com/cilium-tracer/tracer/pkg/session"
)

// Every failing regenerateBPF call (each of the agent's six error kinds in
// turn) gets the error's type and, for the kinds read in BPF, the message
// the agent logged; no other call gets an error; its integer result is the
// one the agent logged, for every call. On every Go version, stripped
// (through the offsets file of the unstripped twin) and PIE, and in the
// probe modes of older kernels.
func TestErrorReturns(t *testing.T) {
	for _, v := range testagent.Matrix {
		t.Run(v.String(), func(t *testing.T) { errorReturns(t, v, nil) })
	}
	for _, mode := range []kernel.Mode{{Cookies: true}, {}} {
		t.Run(mode.String(), func(t *testing.T) { errorReturns(t, testagent.Variant{PIE: true}, &mode) })
	}
	// Without stacks no process's load bias is learnt: the error types
	// are named by the hash their itabs carry.
	t.Run("every process, PIE, no stacks", func(t *testing.T) {
		bin := testagent.Build(t, testagent.Variant{PIE: true})
		e := traceEvery(t, session.Config{Binary: bin, Funcs: []string{testagent.RegenerateBPF}, Captures: testagent.ResultCaptures})
		agent := startFailing(t, bin)
		agent.Begin(t)
		agent.Wait(t, 30*time.Second)
		checkErrorReturns(t, e.stop(t, []int{agent.PID}), agent)
	})
}

func startFailing(t *testing.T, bin string) *testagent.Agent {
	return testagent.Start(t, bin, "-wait-start", "-workers", "4", "-iterations", "10",
		"-interval", "2ms", "-policy-depth", "1", "-fail-every", "2", "-log-bpf")
}

func errorReturns(t *testing.T, v testagent.Variant, mode *kernel.Mode) {
	cfg := session.Config{Funcs: []string{testagent.RegenerateBPF}, Captures: testagent.ResultCaptures, Mode: mode}
	if v.Stripped {
		cfg.Offsets = offsetsFor(t, v, testagent.ResultCaptures)
	}
	agent := startFailing(t, testagent.Build(t, v))
	got, _, _ := traceAll(t, agent, cfg)
	checkErrorReturns(t, got, agent)
}

func checkErrorReturns(t *testing.T, got []calls.Call, agent *testagent.Agent) {
	t.Helper()
	want := map[string]string{} // by seq
	kinds := map[string]int{}
	for _, c := range agent.BPFCalls(t) {
		kinds[c.ErrType]++
		want[c.Seq] = c.Want()
	}
	if len(want) != 40 || len(kinds) != 7 {
		t.Fatalf("agent logged %d regenerateBPF calls of error kinds %v, want 40 of 6 kinds and none", len(want), kinds)
	}
	traced := map[string]string{}
	for _, c := range got {
		attrs := map[string]string{}
		for _, a := range c.Attrs {
			attrs[a.Key] = a.Value
		}
		typ, msg := "", ""
		if c.Error != nil {
			typ, msg = c.Error.Type, c.Error.Message
		}
		if _, dup := traced[attrs["seq"]]; dup || c.Unfinished {
			t.Errorf("call %+v: twice, or unfinished", c)
		}
		traced[attrs["seq"]] = testagent.Describe(attrs["seq"], attrs["rev"], typ, msg)
	}
	for seq, w := range want {
		if traced[seq] != w {
			t.Errorf("regeneration %s: traced %q, the agent logged %q", seq, traced[seq], w)
		}
	}
	if len(traced) != len(want) {
		t.Errorf("traced %d calls, the agent made %d", len(traced), len(want))
	}
}

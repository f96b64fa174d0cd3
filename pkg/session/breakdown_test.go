package session_test

import (
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/session"
)

// Where a call's time went, from its goroutine's state sampled in the
// target's memory while it ran, against the agent's own clock around each
// phase: computing, waiting for a lock another goroutine holds, on a
// channel, and blocked in read(2). Each within 2 ms + 10%, and the
// longest gap between the call's samples, which a loaded node stretches
// (a phase's two ends are each placed within half of it); the longest
// wait at the right function.
func TestBreakdown(t *testing.T) {
	for _, v := range []testagent.Variant{{}, {Stripped: true, PIE: true}, {Toolchain: "go1.22.12", Stripped: true}} {
		t.Run(v.String(), func(t *testing.T) {
			bin := testagent.Build(t, v)
			agent := testagent.Start(t, bin, "-wait-start", "-workers", "0", "-phased", "4")
			cfg := session.Config{Funcs: []string{testagent.Phased}}
			cfg.Announce = true
			got, _, _ := traceAll(t, agent, cfg)
			want := agent.Phased(t)
			if len(got) != len(want) || len(want) != 4 {
				t.Fatalf("%d calls traced, the agent made %d (want 4)", len(got), len(want))
			}
			for i, c := range got {
				b := c.Breakdown
				if b == nil {
					t.Fatalf("call %d: no breakdown", i)
				}
				t.Logf("call %d, %v: %s, longest gap %v", i, c.Duration, b, b.MaxGap)
				w := want[i]
				// Each wait, with the time its goroutine then waited
				// for a thread, at the function that waits: the
				// agent's clock reads the end of a wait only once
				// it runs again. The rest of the call is computing.
				at := map[string]time.Duration{}
				var waited time.Duration
				for _, p := range b.Where {
					d := time.Duration(p.Share * float64(c.Duration))
					at[p.Func] += d
					waited += d
				}
				for _, part := range []struct {
					name      string
					got, want time.Duration
				}{
					{"computing", c.Duration - waited, w["cpu"]},
					{"at lockAlive", at[testagent.LockAlive], w["mutex"]},
					{"at waitForProxyCompletions", at[testagent.WaitForProxy], w["chan"]},
					{"at readPipe", at[testagent.ReadPipe], w["syscall"]},
				} {
					tol := 2*time.Millisecond + part.want/10 + b.MaxGap
					if d := part.got - part.want; d > tol || d < -tol {
						t.Errorf("call %d: %s %v, the agent measured %v (tolerance %v)", i, part.name, part.got, part.want, tol)
					}
				}
				// And each wait for its reason, less what it then
				// waited for a thread.
				for _, part := range []struct {
					name      string
					got, want time.Duration
				}{
					{"mutex", b.Blocked["mutex"], w["mutex"]},
					{"chan receive", b.Blocked["chan receive"], w["chan"]},
					{"syscall", b.Syscall, w["syscall"]},
				} {
					tol := 2*time.Millisecond + part.want/10 + b.MaxGap
					if d := part.got - part.want; d > tol || d < -tol-b.Runnable {
						t.Errorf("call %d: %s %v, the agent measured %v (tolerance %v, and %v runnable)", i, part.name, part.got, part.want, tol, b.Runnable)
					}
				}
				checkPlaces(t, i, b)
			}
		})
	}
}

// checkPlaces: each wait is at the function that waits.
func checkPlaces(t *testing.T, i int, b *calls.Breakdown) {
	t.Helper()
	found := map[string]bool{}
	for _, p := range b.Where {
		found[p.Func] = true
	}
	for _, fn := range []string{testagent.LockAlive, testagent.WaitForProxy, testagent.ReadPipe} {
		if !found[fn] {
			t.Errorf("call %d: no wait at %s; places %v", i, fn, b.Where)
		}
	}
}

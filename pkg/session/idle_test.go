package session_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/session"
)

// An idle reader blocks with no deadline until the next sweep, a minute
// away by default. A lone call still reaches it at once (the probe wakes
// it), and so does the target's exit (its pidfd does): both come well
// before the sweep, which the guard below stays under.
func TestIdleReaderWakes(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	// One regeneration, 3 s after the start: the reader is idle by then.
	// The second is 1000 h away, so the agent stays until stopped.
	agent := testagent.Start(t, bin, "-wait-start", "-start-delay", "3s", "-workers", "1", "-iterations", "2", "-interval", "1000h")
	s, err := session.Start(session.Config{PID: agent.PID, Funcs: []string{testagent.RegenerateBPF}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	agent.Begin(t)

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	got := 0
	stopped := false
	err = s.Run(ctx, func(c *calls.Call) {
		if c.Func != testagent.RegenerateBPF || c.Unfinished {
			return
		}
		got++
		if !stopped {
			stopped = true
			// Stopped once the reader has gone idle again.
			time.AfterFunc(3*time.Second, func() { agent.Cmd.Process.Signal(syscall.SIGTERM) })
		}
	})
	if !errors.Is(err, session.ErrTargetExited) {
		t.Fatalf("Run: %v after %d calls; want the target's exit before the guard", err, got)
	}
	report := agent.Wait(t, 10*time.Second)
	if want := int(report.Counts[testagent.RegenerateBPF]); got != want || want != 1 {
		t.Errorf("%d calls read, the agent made %d (want 1)", got, want)
	}
}

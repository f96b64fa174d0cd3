package session_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/session"
	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/offsets"
)

// A stripped build of a release the goid table does not know: without an
// offsets file the session says why and its calls have no goroutine ID,
// not the g address the probes pair by; with the file `tracer offsets`
// makes from the unstripped build, they have goroutine IDs.
func TestGoidUnknownRelease(t *testing.T) {
	future := testagent.FutureGoVersion()
	unstripped := testagent.WithGoVersion(t, testagent.Build(t, testagent.Variant{}), future)
	stripped := testagent.WithGoVersion(t, testagent.Build(t, testagent.Variant{Stripped: true}), future)
	f, err := symbols.Open(unstripped)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	o, err := offsets.New(f, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.GoidOffset == 0 || f.GoVersion != future {
		t.Fatalf("offsets file of %s: goid offset %d", f.GoVersion, o.GoidOffset)
	}

	for _, withFile := range []bool{false, true} {
		cfg := session.Config{Funcs: []string{testagent.RegenerateBPF}}
		if withFile {
			cfg.Offsets = o
		}
		const workers = 4
		agent := testagent.Start(t, stripped, "-wait-start", "-workers", "4", "-iterations", "5", "-interval", "1ms", "-policy-depth", "1")
		cfg.PID = agent.PID
		s, err := session.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if withFile && s.GoidErr != nil || !withFile && !errors.Is(s.GoidErr, offsets.ErrUnknownGoVersion) {
			t.Errorf("offsets file %v: GoidErr %v", withFile, s.GoidErr)
		}
		agent.Begin(t)
		var got []calls.Call
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err = s.Run(ctx, func(c *calls.Call) { got = append(got, *c) })
		cancel()
		s.Close()
		if !errors.Is(err, session.ErrTargetExited) {
			t.Fatalf("Run: %v, want the target to exit", err)
		}
		report := agent.Wait(t, 10*time.Second)
		if n := report.Counts[testagent.RegenerateBPF]; uint64(len(got)) != n || n == 0 {
			t.Errorf("offsets file %v: %d calls traced, the agent counted %d", withFile, len(got), n)
		}
		// Goroutine IDs of this agent are small numbers; g addresses
		// are heap addresses, far above.
		goroutines := map[uint64]bool{}
		for _, c := range got {
			goroutines[c.Goroutine] = true
			if withFile && (c.Goroutine == 0 || c.Goroutine >= 1<<20) || !withFile && c.Goroutine != 0 {
				t.Fatalf("offsets file %v: call on goroutine %#x", withFile, c.Goroutine)
			}
		}
		if withFile && len(goroutines) > workers {
			t.Errorf("calls on %d goroutines, the agent ran %d workers", len(goroutines), workers)
		}
	}
}

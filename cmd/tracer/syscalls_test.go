package main_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/otlptest"
	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/export"
)

// With --breakdown each call comes with its system calls and child
// processes: on stdout in JSON, and to OTLP as child spans of the call's
// span. The child process the agent runs and the BPF program it loads last
// what the agent measured, within 2 ms + 10%.
func TestTraceSyscalls(t *testing.T) {
	recv := otlptest.NewGRPC(t)
	bin := testagent.Build(t, testagent.Variant{})
	a := testagent.Start(t, bin, "-wait-start", "-workers", "0", "-phased", "2", "-phase-exec", "30ms", "-phase-bpf-insns", "20000")
	r := startTracer(t, nil, "trace", "--pid", strconv.Itoa(a.PID), "--follow=false", "--output", "json", "--breakdown",
		"--otlp", recv.Addr(), "--otlp-insecure", "--func", testagent.Phased)
	r.waitFor(t, "tracing 1 functions", 30*time.Second)
	a.Begin(t)
	a.Wait(t, 30*time.Second)
	r.wait(t, 30*time.Second)
	if !strings.Contains(r.stderr.String(), "tracer: syscalls through raw tracepoints") {
		t.Errorf("stderr does not say how syscalls are followed:\n%s", r.stderr)
	}
	want := a.Phased(t)
	var cs []export.JSONSpan
	for _, line := range strings.Split(strings.TrimSpace(r.stdout.String()), "\n") {
		var c export.JSONSpan
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("stdout line %q: %v", line, err)
		}
		cs = append(cs, c)
	}
	if len(cs) != len(want) || len(want) != 2 {
		t.Fatalf("%d calls on stdout, the agent made %d (want 2)", len(cs), len(want))
	}
	spans := recv.Spans()
	for i, c := range cs {
		for _, part := range []struct {
			name  string
			child bool
			phase string
		}{
			{"cilium-agent", true, "exec"},
			{"bpf BPF_PROG_LOAD", false, "bpf"},
		} {
			var got *export.JSONSyscall
			for j, sc := range c.Syscalls {
				if sc.Name == part.name && sc.Child == part.child {
					got = &c.Syscalls[j]
				}
			}
			if got == nil {
				t.Errorf("call %d: no %q in %+v", i, part.name, c.Syscalls)
				continue
			}
			if lo, hi := testagent.PhaseBounds(want[i], part.phase); time.Duration(got.DurationNS) < lo || time.Duration(got.DurationNS) > hi {
				t.Errorf("call %d: %s took %v, the agent measured %v (want %v to %v)", i, part.name, time.Duration(got.DurationNS), want[i][part.phase], lo, hi)
			}
			if !hasSpan(spans, got.SpanID, c.SpanID, part.name, time.Duration(got.DurationNS)) {
				t.Errorf("call %d: no OTLP span %s %q under the call's %s", i, got.SpanID, part.name, c.SpanID)
			}
		}
		if len(c.SyscallTotals) == 0 {
			t.Errorf("call %d: no counts of short syscalls", i)
		}
	}
}

// hasSpan says whether spans hold span id named name, child of parent,
// lasting d.
func hasSpan(spans []otlptest.Span, id, parent, name string, d time.Duration) bool {
	for _, s := range spans {
		if s.SpanID == id && s.ParentSpanID == parent && s.Name == name && s.Duration == d {
			return true
		}
	}
	return false
}

package session_test

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/export"
	"github.com/cilium-tracer/tracer/pkg/session"
)

// A real trace of the example agent, captured in memory: regenerate is the
// root, regenerateBPF its child, syncPolicyMapWithDump and compileAndLoad's
// neighbours nest below; children fit inside their parents.
func TestTraceToSpans(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	agent := testagent.Start(t, bin, "-wait-start", "-workers", "8", "-iterations", "3", "-interval", "5ms")
	s, err := session.Start(session.Config{PID: agent.PID, Funcs: testagent.Counted, Stacks: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before := time.Now()
	agent.Begin(t)

	mem := &export.MemoryExporter{}
	host, _ := os.Hostname()
	res := export.Resource{HostName: host, PID: agent.PID, GoVersion: s.File.GoVersion}
	pipe := export.NewPipeline(export.NewSpanBuilder(res), map[string]export.Exporter{"memory": mem}, export.PipelineConfig{})
	err = s.Run(context.Background(), func(c *calls.Call) { pipe.Enqueue(*c) })
	after := time.Now()
	if !errors.Is(err, session.ErrTargetExited) {
		t.Fatal(err)
	}
	if err := pipe.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	report := agent.Wait(t, 10*time.Second)

	spans := mem.Spans()
	byID := map[trace.SpanID]export.Span{}
	for _, sp := range spans {
		byID[sp.SpanID] = sp
	}
	childSum := map[trace.SpanID]time.Duration{}
	roots := 0
	for _, sp := range spans {
		if sp.Start.Before(before) || sp.End.After(after) {
			t.Fatalf("span %s [%v, %v] outside the session [%v, %v]", sp.Name, sp.Start, sp.End, before, after)
		}
		attrs := map[string]string{}
		for _, kv := range sp.Attributes {
			attrs[string(kv.Key)] = kv.Value.Emit()
		}
		if attrs["code.function"] != sp.Call.Func || !strings.HasSuffix(attrs["code.filepath"], ".go") ||
			attrs["code.lineno"] == "" || attrs["goroutine.id"] == "" || attrs["code.stacktrace"] == "" {
			t.Fatalf("span %s lacks code attributes: %v", sp.Name, attrs)
		}
		rattrs := map[string]string{}
		for _, kv := range sp.Resource.Attributes() {
			rattrs[string(kv.Key)] = kv.Value.Emit()
		}
		if rattrs["service.name"] != "cilium-agent" || rattrs["process.runtime.version"] != runtime.Version() ||
			rattrs["host.name"] != host || rattrs["process.pid"] == "" {
			t.Fatalf("resource %v", rattrs)
		}

		if !sp.ParentSpanID.IsValid() {
			roots++
			if sp.Call.Func != testagent.Regenerate && sp.Call.Func != testagent.CTLookup && sp.Call.Func != testagent.DumpToSlice && sp.Call.Func != testagent.CompileAndLoad {
				// DumpToSlice and compileAndLoad run on goroutines
				// of their own: roots of their own traces.
				t.Errorf("root span %s", sp.Call.Func)
			}
			continue
		}
		parent, ok := byID[sp.ParentSpanID]
		if !ok {
			t.Fatalf("span %s: parent %s not exported", sp.Name, sp.ParentSpanID)
		}
		if parent.TraceID != sp.TraceID {
			t.Errorf("span %s in trace %s, its parent in %s", sp.Name, sp.TraceID, parent.TraceID)
		}
		if sp.Start.Before(parent.Start) || sp.End.After(parent.End) {
			t.Errorf("span %s [%v, %v] not inside its parent %s [%v, %v]", sp.Name, sp.Start, sp.End, parent.Name, parent.Start, parent.End)
		}
		childSum[sp.ParentSpanID] += sp.End.Sub(sp.Start)
		want := map[string]string{testagent.RegenerateBPF: testagent.Regenerate, testagent.SyncPolicyMap: testagent.RegenerateBPF, testagent.Upsert: testagent.Regenerate, testagent.Allocate: testagent.Regenerate}
		if w, ok := want[sp.Call.Func]; ok && parent.Call.Func != w {
			t.Errorf("%s's parent is %s, want %s", sp.Call.Func, parent.Call.Func, w)
		}
	}
	for id, sum := range childSum {
		p := byID[id]
		if d := p.End.Sub(p.Start); sum > d {
			t.Errorf("children of %s last %v, more than its %v", p.Name, sum, d)
		}
	}
	if want := int(report.Counts[testagent.Regenerate]); roots < want {
		t.Errorf("%d root spans, want at least one per regenerate call (%d)", roots, want)
	}
}

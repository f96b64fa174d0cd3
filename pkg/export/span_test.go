package export

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/cilium-tracer/tracer/pkg/calls"
)

var testResource = Resource{
	HostName:      "node-1",
	ContainerID:   "0123456789abcdef",
	PID:           4242,
	CiliumVersion: "1.18.3",
	GoVersion:     "go1.24.9",
}

func attrMap(kvs []attribute.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

func TestBuild(t *testing.T) {
	b := NewSpanBuilder(testResource)
	tree := regenerationTree(100, testT0)
	sync, bpf, root := b.Build(tree[0]), b.Build(tree[1]), b.Build(tree[2])

	if root.TraceID != sync.TraceID || root.TraceID != bpf.TraceID {
		t.Fatalf("trace IDs differ within one tree: %s %s %s", root.TraceID, bpf.TraceID, sync.TraceID)
	}
	if got := binary.BigEndian.Uint64(root.TraceID[8:]); got != 100 {
		t.Errorf("trace ID %s does not end in root ID 100 (got %d)", root.TraceID, got)
	}
	if other := NewSpanBuilder(testResource).Build(tree[2]); other.TraceID == root.TraceID {
		t.Errorf("two sessions gave the same trace ID %s", root.TraceID)
	}
	if root.SpanID != (trace.SpanID{7: 100}) || bpf.SpanID != (trace.SpanID{7: 101}) {
		t.Errorf("span IDs %s %s, want call IDs 100 and 101", root.SpanID, bpf.SpanID)
	}
	if root.ParentSpanID.IsValid() {
		t.Errorf("root has parent %s", root.ParentSpanID)
	}
	if bpf.ParentSpanID != root.SpanID || sync.ParentSpanID != bpf.SpanID {
		t.Errorf("parent links: bpf->%s sync->%s", bpf.ParentSpanID, sync.ParentSpanID)
	}
	if bpf.Name != "endpoint.(*Endpoint).regenerateBPF" {
		t.Errorf("name %q", bpf.Name)
	}
	if bpf.Kind != trace.SpanKindInternal {
		t.Errorf("kind %v", bpf.Kind)
	}
	if !bpf.Start.Equal(testT0.Add(2*time.Millisecond)) || bpf.End.Sub(bpf.Start) != 40*time.Millisecond {
		t.Errorf("bpf span %v..%v", bpf.Start, bpf.End)
	}
	if bpf.StatusCode != codes.Unset {
		t.Errorf("finished call has status %v", bpf.StatusCode)
	}

	a := attrMap(sync.Attributes)
	want := map[string]string{
		"code.function":          fnSyncPolicyMap,
		"code.filepath":          "/go/src/github.com/cilium/cilium/pkg/endpoint/bpf.go",
		"code.lineno":            "1400",
		"goroutine.id":           "77",
		"tracer.sample_rate":     "1",
		"tracer.min_duration_ns": "1000",
		"endpoint.id":            "1234",
	}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, a[k], v)
		}
	}
	st := strings.Split(a["code.stacktrace"], "\n")
	if len(st) != 7 {
		t.Fatalf("stacktrace has %d lines, want 7:\n%s", len(st), a["code.stacktrace"])
	}
	if st[0] != fnSyncPolicyMap+" /go/src/github.com/cilium/cilium/pkg/endpoint/bpf.go:1400" {
		t.Errorf("stack line 0: %q", st[0])
	}
	if !strings.HasSuffix(st[1], "syncPolicyMap /go/src/github.com/cilium/cilium/pkg/endpoint/bpf.go:1300 (inlined)") {
		t.Errorf("stack line 1 not marked inlined: %q", st[1])
	}

	r := attrMap(root.Resource.Attributes())
	wantRes := map[string]string{
		"service.name":            "cilium-agent",
		"host.name":               "node-1",
		"container.id":            "0123456789abcdef",
		"process.pid":             "4242",
		"cilium.version":          "1.18.3",
		"process.runtime.version": "go1.24.9",
	}
	for k, v := range wantRes {
		if r[k] != v {
			t.Errorf("resource %s = %q, want %q", k, r[k], v)
		}
	}
}

func TestBuildUnfinished(t *testing.T) {
	c := regenerationTree(1, testT0)[1]
	c.Unfinished = true
	c.Reason = "goroutine panicked"
	s := NewSpanBuilder(Resource{ServiceName: "agent-2"}).Build(c)
	if s.StatusCode != codes.Error || s.StatusMessage != "goroutine panicked" {
		t.Errorf("status %v %q", s.StatusCode, s.StatusMessage)
	}
	if got := attrMap(s.Resource.Attributes())["service.name"]; got != "agent-2" {
		t.Errorf("service.name %q", got)
	}
}

// A call that returned an error has status Error with the message (the type
// when the message is not known), error.type and error.message; the
// ClickHouse row, the JSON line and the text line carry them, and the
// unfinished reason stays empty.
func TestBuildError(t *testing.T) {
	b := NewSpanBuilder(testResource)
	c := regenerationTree(1, testT0)[1]
	c.Error = &calls.Error{Type: "*fs.PathError", Message: "open /x: no such file or directory"}
	typeOnly := regenerationTree(1, testT0)[1]
	typeOnly.Error = &calls.Error{Type: "*endpoint.compileError"}
	s, s2 := b.Build(c), b.Build(typeOnly)
	if s.StatusCode != codes.Error || s.StatusMessage != c.Error.Message || s2.StatusCode != codes.Error || s2.StatusMessage != "*endpoint.compileError" {
		t.Errorf("status %v %q, %v %q", s.StatusCode, s.StatusMessage, s2.StatusCode, s2.StatusMessage)
	}
	a, a2 := attrMap(s.Attributes), attrMap(s2.Attributes)
	if a["error.type"] != "*fs.PathError" || a["error.message"] != c.Error.Message || a2["error.type"] != "*endpoint.compileError" {
		t.Errorf("attributes %v, %v", a, a2)
	}
	if _, ok := a2["error.message"]; ok {
		t.Errorf("error.message of a type whose message is not read: %v", a2)
	}
	row := NewClickHouseRow(&s)
	if row.StatusCode != "Error" || row.StatusMessage != c.Error.Message {
		t.Errorf("ClickHouse status %q %q", row.StatusCode, row.StatusMessage)
	}
	var js, text strings.Builder
	if err := NewJSONExporter(&js).Export(context.Background(), []Span{s}); err != nil {
		t.Fatal(err)
	}
	if want := `"error":{"type":"*fs.PathError","message":"open /x: no such file or directory"}`; !strings.Contains(js.String(), want) || strings.Contains(js.String(), `"reason"`) {
		t.Errorf("JSON %s, want %s and no reason", js.String(), want)
	}
	if err := NewTextExporter(&text, false).Export(context.Background(), []Span{s2}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(text.String(), " ERROR *endpoint.compileError\n") {
		t.Errorf("text %q", text.String())
	}
}

// TestTree checks, on random nested calls, that every child links to its
// parent in the same trace and that children never add up to more than their
// parent.
func TestTree(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	cs := randomTree(r, 1, 2000)
	// Through a pipeline, in small batches, as the tracer delivers them.
	mem := &MemoryExporter{}
	p := NewPipeline(NewSpanBuilder(testResource), map[string]Exporter{"mem": mem},
		PipelineConfig{QueueSize: len(cs), BatchSize: 7})
	for _, c := range cs {
		if !p.Enqueue(c) {
			t.Fatal("call dropped")
		}
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := make(map[trace.SpanID]Span, len(cs))
	for _, s := range mem.Spans() {
		if _, dup := spans[s.SpanID]; dup {
			t.Fatalf("duplicate span ID %s", s.SpanID)
		}
		// Children finish before their parents, so a parent never exists
		// yet when its child is built.
		if _, early := spans[s.ParentSpanID]; s.ParentSpanID.IsValid() && early {
			t.Fatalf("span %s finished after its parent", s.SpanID)
		}
		spans[s.SpanID] = s
	}
	if len(spans) != len(cs) {
		t.Fatalf("%d spans out of %d calls", len(spans), len(cs))
	}
	childSum := map[trace.SpanID]time.Duration{}
	roots := 0
	for _, s := range spans {
		if !s.ParentSpanID.IsValid() {
			roots++
			continue
		}
		p, ok := spans[s.ParentSpanID]
		if !ok {
			t.Fatalf("span %s: parent %s missing", s.SpanID, s.ParentSpanID)
		}
		if p.TraceID != s.TraceID {
			t.Errorf("span %s in trace %s, parent in %s", s.SpanID, s.TraceID, p.TraceID)
		}
		if s.Start.Before(p.Start) || s.End.After(p.End) {
			t.Errorf("span %s [%v, %v] outside parent [%v, %v]", s.SpanID, s.Start, s.End, p.Start, p.End)
		}
		childSum[p.SpanID] += s.End.Sub(s.Start)
	}
	for id, sum := range childSum {
		p := spans[id]
		if d := p.End.Sub(p.Start); sum > d {
			t.Errorf("span %s: children sum to %v, more than its %v", id, sum, d)
		}
	}
	if roots < 2 || len(childSum) < 10 {
		t.Fatalf("degenerate tree: %d roots, %d parents", roots, len(childSum))
	}
}

func TestNodeName(t *testing.T) {
	t.Setenv("NODE_NAME", "node-7")
	if got := NodeName(); got != "node-7" {
		t.Errorf("NodeName() = %q with NODE_NAME set, want node-7", got)
	}
	t.Setenv("NODE_NAME", "")
	if host, _ := os.Hostname(); NodeName() != host {
		t.Errorf("NodeName() = %q without NODE_NAME, want the host name %q", NodeName(), host)
	}
}

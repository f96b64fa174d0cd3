package export

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/cilium-tracer/tracer/pkg/calls"
)

// recorder is an Exporter that keeps what it is given and can be made to
// block or fail.
type recorder struct {
	mu      sync.Mutex
	spans   []Span
	batches []int
	gate    chan struct{} // when non-nil, Export waits for it
	fail    error
	closed  bool
}

func (r *recorder) Export(ctx context.Context, spans []Span) error {
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrShutdown
	}
	if r.fail != nil {
		return r.fail
	}
	r.spans = append(r.spans, spans...)
	r.batches = append(r.batches, len(spans))
	return nil
}

func (r *recorder) Shutdown(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.spans)
}

func manyCalls(n int) []calls.Call {
	var cs []calls.Call
	for len(cs) < n {
		cs = append(cs, regenerationTree(uint64(len(cs)+1), testT0.Add(time.Duration(len(cs))*time.Millisecond))...)
	}
	return cs[:n]
}

func TestPipelineBatches(t *testing.T) {
	a, b := &recorder{}, &recorder{}
	p := NewPipeline(NewSpanBuilder(testResource), map[string]Exporter{"a": a, "b": b},
		PipelineConfig{QueueSize: 1000, BatchSize: 100, BatchTimeout: time.Hour})
	for _, c := range manyCalls(250) {
		if !p.Enqueue(c) {
			t.Fatal("Enqueue refused a call with room in the queue")
		}
	}
	// Two full batches go out without waiting for the timeout.
	waitFor(t, func() bool { return a.count() == 200 && b.count() == 200 })
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Shutdown flushes the partial batch.
	if a.count() != 250 || b.count() != 250 {
		t.Fatalf("exported %d and %d spans, want 250", a.count(), b.count())
	}
	if got := a.batches; len(got) != 3 || got[0] != 100 || got[2] != 50 {
		t.Errorf("batches %v, want [100 100 50]", got)
	}
	st := p.Stats()
	if st.Received != 250 || st.Dropped != 0 || st.Pending != 0 {
		t.Errorf("stats %+v", st)
	}
	if e := st.Exporters["a"]; e.Queued != 250 || e.Exported != 250 || e.Dropped != 0 || e.Failed != 0 {
		t.Errorf("exporter stats %+v", e)
	}
	if p.Enqueue(manyCalls(1)[0]) {
		t.Error("Enqueue accepted a call after Shutdown")
	}
	if st := p.Stats(); st.Dropped != 1 {
		t.Errorf("call after Shutdown not counted as dropped: %+v", st)
	}
	if err := a.Export(context.Background(), nil); !errors.Is(err, ErrShutdown) {
		t.Errorf("exporter not shut down: %v", err)
	}
}

func TestPipelineBatchTimeout(t *testing.T) {
	m := &MemoryExporter{}
	p := NewPipeline(NewSpanBuilder(testResource), map[string]Exporter{"m": m},
		PipelineConfig{BatchSize: 100, BatchTimeout: 20 * time.Millisecond})
	cs := manyCalls(3)
	for _, c := range cs {
		p.Enqueue(c)
	}
	waitFor(t, func() bool { return len(m.Spans()) == 3 })
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, s := range m.Spans() {
		if s.Call.ID != cs[i].ID || s.SpanID != (trace.SpanID{7: byte(cs[i].ID)}) {
			t.Errorf("span %d is call %d (%s), want call %d", i, s.Call.ID, s.SpanID, cs[i].ID)
		}
	}
	if err := m.Export(context.Background(), nil); !errors.Is(err, ErrShutdown) {
		t.Errorf("Export after Shutdown: %v", err)
	}
}

// TestPipelineBounded blocks one exporter: Enqueue must stay non-blocking,
// memory must stay within MaxPending, the other exporter must keep
// exporting, and every call must be accounted for.
func TestPipelineBounded(t *testing.T) {
	stuck := &recorder{gate: make(chan struct{})}
	fine := &recorder{}
	p := NewPipeline(NewSpanBuilder(testResource), map[string]Exporter{"stuck": stuck, "fine": fine},
		PipelineConfig{QueueSize: 64, BatchSize: 16, BatchTimeout: time.Millisecond})
	const n = 2000
	maxPending := 0
	for i, c := range manyCalls(n) {
		start := time.Now()
		p.Enqueue(c)
		if d := time.Since(start); d > 50*time.Millisecond {
			t.Fatalf("Enqueue blocked for %v", d)
		}
		if pend := p.Stats().Pending; pend > maxPending {
			maxPending = pend
		}
		if i%16 == 0 {
			time.Sleep(time.Millisecond) // let the dispatcher run
		}
	}
	if maxPending > p.MaxPending() {
		t.Errorf("held %d calls, more than the bound %d", maxPending, p.MaxPending())
	}
	close(stuck.gate)
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	accepted := st.Received - st.Dropped
	for name, e := range st.Exporters {
		if e.Queued+e.Dropped != accepted {
			t.Errorf("%s: queued %d + dropped %d != accepted %d", name, e.Queued, e.Dropped, accepted)
		}
		if e.Exported+e.Failed != e.Queued {
			t.Errorf("%s: exported %d + failed %d != queued %d", name, e.Exported, e.Failed, e.Queued)
		}
	}
	if e := st.Exporters["stuck"]; e.Dropped == 0 {
		t.Errorf("blocked exporter dropped nothing: %+v", e)
	}
	// The healthy exporter keeps up; on a loaded machine it may lose a
	// little, never the bulk.
	if e := st.Exporters["fine"]; e.Exported < accepted*9/10 {
		t.Errorf("healthy exporter suffered from the blocked one: %+v (accepted %d)", e, accepted)
	}
	t.Logf("max pending %d (bound %d), stats %+v", maxPending, p.MaxPending(), st)
}

func TestPipelineFailuresCounted(t *testing.T) {
	r := &recorder{fail: errors.New("boom")}
	var mu sync.Mutex
	var got []string
	p := NewPipeline(NewSpanBuilder(testResource), map[string]Exporter{"r": r}, PipelineConfig{
		BatchSize: 2,
		OnError: func(name string, err error) {
			mu.Lock()
			got = append(got, name+": "+err.Error())
			mu.Unlock()
		},
	})
	for _, c := range manyCalls(4) {
		p.Enqueue(c)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e := p.Stats().Exporters["r"]; e.Failed != 4 || e.Exported != 0 {
		t.Errorf("stats %+v", e)
	}
	if len(got) != 2 || got[0] != "r: boom" {
		t.Errorf("OnError got %q", got)
	}
}

// stubborn ignores cancellation.
type stubborn struct{ release chan struct{} }

func (s stubborn) Export(context.Context, []Span) error { <-s.release; return nil }
func (s stubborn) Shutdown(context.Context) error       { return errors.New("shut down while exporting") }

func TestPipelineShutdownTimeout(t *testing.T) {
	polite := &recorder{gate: make(chan struct{})} // returns when canceled
	idle := &recorder{}
	st := stubborn{release: make(chan struct{})}
	defer close(st.release)
	p := NewPipeline(NewSpanBuilder(testResource),
		map[string]Exporter{"polite": polite, "idle": idle, "stubborn": st}, PipelineConfig{})
	p.Enqueue(manyCalls(1)[0])
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "stubborn: abandoned") {
		t.Fatalf("Shutdown with stuck exporters: %v", err)
	}
	if d := time.Since(start); d > 50*time.Millisecond+shutdownGrace+time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	if e := p.Stats().Exporters["polite"]; e.Failed != 1 {
		t.Errorf("canceled export not counted as failed: %+v", e)
	}
	// Exporters that returned are shut down; the stubborn one is not.
	if !polite.closed || !idle.closed {
		t.Error("exporters that stopped were not shut down")
	}
	if err2 := p.Shutdown(context.Background()); err2 != err {
		t.Errorf("second Shutdown: %v", err2)
	}
}

func TestTextExporter(t *testing.T) {
	b := NewSpanBuilder(testResource)
	tree := regenerationTree(1, testT0)
	tree[0].Unfinished = true
	tree[0].Reason = "entry expired"
	var spans []Span
	for _, c := range tree {
		spans = append(spans, b.Build(c))
	}

	var buf bytes.Buffer
	e := NewTextExporter(&buf, false)
	if err := e.Export(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), buf.String())
	}
	want := "12:00:00.126456          2ms g=77     endpoint.(*Endpoint).syncPolicyMapWithDump endpoint.id=1234 UNFINISHED: entry expired"
	if lines[0] != want {
		t.Errorf("line\n%q, want\n%q", lines[0], want)
	}
	if !strings.Contains(lines[1], " 40ms g=77") || !strings.HasSuffix(lines[1], "endpoint.(*Endpoint).regenerateBPF endpoint.id=1234") {
		t.Errorf("line %q", lines[1])
	}

	buf.Reset()
	e = NewTextExporter(&buf, true)
	e.Export(context.Background(), spans[:1])
	if !strings.Contains(buf.String(), "\n    github.com/cilium/cilium/pkg/endpoint.(*Endpoint).syncPolicyMap\n        /go/src/github.com/cilium/cilium/pkg/endpoint/bpf.go:1300 (inlined)\n") {
		t.Errorf("stack output:\n%s", buf.String())
	}
	e.Shutdown(context.Background())
	if err := e.Export(context.Background(), spans); !errors.Is(err, ErrShutdown) {
		t.Errorf("Export after Shutdown: %v", err)
	}
}

func TestJSONExporter(t *testing.T) {
	b := NewSpanBuilder(testResource)
	spans := []Span{b.Build(regenerationTree(1, testT0)[0])}
	var buf bytes.Buffer
	if err := NewJSONExporter(&buf).Export(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	var js JSONSpan
	if err := json.Unmarshal(buf.Bytes(), &js); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	if js.SpanID != "0000000000000003" || js.ParentSpanID != "0000000000000002" ||
		js.TraceID != spans[0].TraceID.String() || js.Function != fnSyncPolicyMap ||
		js.DurationNS != 2e6 || !js.Time.Equal(testT0.Add(3*time.Millisecond)) ||
		js.Attrs["endpoint.id"] != "1234" || len(js.Stack) != 7 || !js.Stack[1].Inlined {
		t.Errorf("decoded %+v", js)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

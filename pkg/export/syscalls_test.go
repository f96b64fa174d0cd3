package export

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"

	"github.com/cilium-tracer/tracer/internal/chtest"
	"github.com/cilium-tracer/tracer/pkg/calls"
)

// withSyscalls returns the root of a regeneration tree with a blocking
// read, a refused BPF_PROG_LOAD, a child process and one still running at
// its end, and counts of short syscalls.
func withSyscalls() calls.Call {
	c := regenerationTree(100, testT0)[2]
	c.Syscalls = []calls.Syscall{
		{Name: "read", Start: c.Start.Add(time.Millisecond), Duration: 5 * time.Millisecond, Ret: 1},
		{Name: "clang", Start: c.Start.Add(10 * time.Millisecond), Duration: 20 * time.Millisecond, Ret: 4343, Child: true},
		{Name: "bpf BPF_PROG_LOAD", Start: c.Start.Add(31 * time.Millisecond), Duration: 3 * time.Millisecond, Ret: -1},
		{Name: "cilium-agent", Start: c.Start.Add(c.Duration - 5*time.Millisecond), Duration: 5 * time.Millisecond, Ret: 4344, Child: true, Running: true},
	}
	c.SyscallTotals = []calls.SyscallTotal{{Name: "close", Count: 9, Time: 35 * time.Microsecond}, {Name: "netlink sendto", Count: 2, Time: 8 * time.Microsecond}}
	return c
}

// A call's syscalls and child processes are child spans of its span, and
// the counts of its short syscalls attributes of it.
func TestSyscallSpans(t *testing.T) {
	c := withSyscalls()
	s := NewSpanBuilder(testResource).Build(c)
	attrs := attrMap(s.Attributes)
	for k, v := range map[string]string{
		"tracer.syscall.close.count": "9", "tracer.syscall.close.ns": "35000",
		"tracer.syscall.netlink_sendto.count": "2", "tracer.syscall.netlink_sendto.ns": "8000",
	} {
		if attrs[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, attrs[k], v)
		}
	}
	if len(s.Children) != len(c.Syscalls) {
		t.Fatalf("%d child spans for %d syscalls", len(s.Children), len(c.Syscalls))
	}
	ids := map[[8]byte]bool{s.SpanID: true}
	for i, ch := range s.Children {
		sc := c.Syscalls[i]
		if ch.TraceID != s.TraceID || ch.ParentSpanID != s.SpanID || ids[ch.SpanID] || !ch.SpanID.IsValid() {
			t.Errorf("child %d: trace %s parent %s span %s; the call's trace %s span %s", i, ch.TraceID, ch.ParentSpanID, ch.SpanID, s.TraceID, s.SpanID)
		}
		ids[ch.SpanID] = true
		if ch.Name != sc.Name || !ch.Start.Equal(sc.Start) || ch.End.Sub(ch.Start) != sc.Duration || ch.Resource != s.Resource {
			t.Errorf("child %d: %q from %v to %v, want %q for %v", i, ch.Name, ch.Start, ch.End, sc.Name, sc.Duration)
		}
	}
	if a := attrMap(s.Children[1].Attributes); a["tracer.span"] != "process" || a["process.pid"] != "4343" || a["tracer.process.running"] != "" {
		t.Errorf("child process attributes %v", a)
	}
	if a := attrMap(s.Children[3].Attributes); a["tracer.span"] != "process" || a["process.pid"] != "4344" || a["tracer.process.running"] != "true" || !s.Children[3].End.Equal(s.End) {
		t.Errorf("running child process: attributes %v, end %v, the call's %v", a, s.Children[3].End, s.End)
	}
	if a := attrMap(s.Children[2].Attributes); a["tracer.span"] != "syscall" || a["tracer.syscall.ret"] != "-1" || s.Children[2].StatusCode != codes.Error || s.Children[2].StatusMessage != "operation not permitted" {
		t.Errorf("failed syscall: attributes %v, status %v %q", a, s.Children[2].StatusCode, s.Children[2].StatusMessage)
	}

	// They reach OTLP and ClickHouse as ordinary spans, after their
	// parent.
	all := append([]Span{s}, s.Children...)
	rs := OTLPSpans([]Span{s})
	if got := rs[0].ScopeSpans[0].Spans; len(got) != len(all) {
		t.Errorf("%d OTLP spans, want %d", len(got), len(all))
	}
	srv := chtest.New(t, 25, 8)
	e, err := NewClickHouseExporter(ClickHouseConfig{Addrs: []string{srv.Addr()}, SkipSchema: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Export(context.Background(), []Span{s}); err != nil {
		t.Fatal(err)
	}
	e.Shutdown(context.Background())
	_, rows := srv.Snapshot()
	if len(rows) != len(all) {
		t.Fatalf("%d ClickHouse rows, want %d", len(rows), len(all))
	}
	for i, sp := range all {
		w := NewClickHouseRow(&sp)
		g := rows[i]
		if g.SpanID != w.SpanID || g.ParentSpanID != w.ParentSpanID || g.TraceID != w.TraceID || g.SpanName != w.SpanName || g.Duration != w.Duration || !g.Timestamp.Equal(w.Timestamp) || g.StatusCode != w.StatusCode || len(g.SpanAttributes) != len(w.SpanAttributes) {
			t.Errorf("row %d: %+v, want %+v", i, g, w)
		}
	}
}

// The JSON and text exporters show them under their call.
func TestSyscallOutput(t *testing.T) {
	s := NewSpanBuilder(testResource).Build(withSyscalls())
	var buf bytes.Buffer
	if err := NewJSONExporter(&buf).Export(context.Background(), []Span{s}); err != nil {
		t.Fatal(err)
	}
	var js JSONSpan
	if err := json.Unmarshal(buf.Bytes(), &js); err != nil {
		t.Fatal(err)
	}
	if len(js.Syscalls) != 4 || js.Syscalls[1].Name != "clang" || !js.Syscalls[1].Child || js.Syscalls[1].Running || js.Syscalls[1].DurationNS != 20e6 || js.Syscalls[2].SpanID != s.Children[2].SpanID.String() || !js.Syscalls[3].Running {
		t.Errorf("JSON syscalls %+v", js.Syscalls)
	}
	if len(js.SyscallTotals) != 2 || js.SyscallTotals[0] != (JSONSyscallTotal{Name: "close", Count: 9, TimeNS: 35000}) {
		t.Errorf("JSON syscall totals %+v", js.SyscallTotals)
	}

	buf.Reset()
	if err := NewTextExporter(&buf, false).Export(context.Background(), []Span{s}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		"          +1ms [====                                    ]        5ms read",
		"         +10ms [        ================                ]       20ms child clang (pid 4343)",
		"         +31ms [                        ===             ]        3ms bpf BPF_PROG_LOAD",
		"         +45ms [                                    ====]        5ms child cilium-agent (pid 4344) still running",
		"    short syscalls: close 9× 35µs · netlink sendto 2× 8µs",
	}
	if len(lines) != 1+len(want) {
		t.Fatalf("text output:\n%s", buf.String())
	}
	for i, w := range want {
		if lines[1+i] != w {
			t.Errorf("line %d\n got %q\nwant %q", 1+i, lines[1+i], w)
		}
	}
}

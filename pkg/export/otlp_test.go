package export

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/cilium-tracer/tracer/internal/otlptest"
)

func TestOTLP(t *testing.T) {
	for _, transport := range []string{"grpc", "http"} {
		t.Run(transport, func(t *testing.T) {
			recv := otlptest.NewGRPC(t)
			if transport == "http" {
				recv = otlptest.NewHTTP(t)
			}
			ctx := context.Background()
			e, err := NewOTLPExporter(ctx, OTLPConfig{
				HTTP:     transport == "http",
				Endpoint: recv.Addr(),
				Insecure: true,
				Headers:  map[string]string{"x-tenant": "node-1"},
			})
			if err != nil {
				t.Fatal(err)
			}
			// Through a pipeline, as the tracer uses it.
			p := NewPipeline(NewSpanBuilder(testResource), map[string]Exporter{"otlp": e}, PipelineConfig{})
			spans := testSpans()
			for _, s := range spans {
				p.Enqueue(s.Call)
			}
			if err := p.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if st := p.Stats().Exporters["otlp"]; st.Exported != uint64(len(spans)) {
				t.Fatalf("stats %+v", st)
			}
			if err := e.Export(ctx, spans); !errors.Is(err, ErrShutdown) {
				t.Errorf("Export after Shutdown: %v", err)
			}

			var got []*tracepb.Span
			for i, req := range recv.Requests() {
				if h := req.Header.Get("X-Tenant"); h != "node-1" {
					t.Errorf("request %d header x-tenant %q", i, h)
				}
				for _, rs := range req.Traces.ResourceSpans {
					res := otlptest.Attributes(rs.Resource.Attributes)
					want := map[string]any{
						"service.name": "cilium-agent", "host.name": "node-1",
						"container.id": "0123456789abcdef", "process.pid": int64(4242),
						"cilium.version": "1.18.3", "process.runtime.version": "go1.24.9",
					}
					for k, v := range want {
						if res[k] != v {
							t.Errorf("resource %s = %v, want %v", k, res[k], v)
						}
					}
					for _, ss := range rs.ScopeSpans {
						if ss.Scope.Name != ScopeName {
							t.Errorf("scope %q", ss.Scope.Name)
						}
						got = append(got, ss.Spans...)
					}
				}
			}
			if len(got) != len(spans) {
				t.Fatalf("received %d spans, want %d", len(got), len(spans))
			}
			// The pipeline builds spans with its own builder: match by span
			// ID and compare with the calls.
			byID := map[string]*tracepb.Span{}
			traceOf := map[uint64][]byte{}
			for _, s := range got {
				byID[string(s.SpanId)] = s
			}
			for _, want := range spans {
				c := want.Call
				s := byID[string(want.SpanID[:])]
				if s == nil {
					t.Errorf("span %s not received", want.SpanID)
					continue
				}
				if prev, ok := traceOf[c.RootID]; ok && !bytes.Equal(prev, s.TraceId) {
					t.Errorf("span %s: trace %x, its tree is in %x", want.SpanID, s.TraceId, prev)
				}
				traceOf[c.RootID] = s.TraceId
				if !bytes.Equal(s.TraceId[8:], want.TraceID[8:]) {
					t.Errorf("span %s: trace ID %x does not end in root ID %d", want.SpanID, s.TraceId, c.RootID)
				}
				if c.ParentID == 0 && len(s.ParentSpanId) != 0 || c.ParentID != 0 && !bytes.Equal(s.ParentSpanId, want.ParentSpanID[:]) {
					t.Errorf("span %s: parent %x, want %s", want.SpanID, s.ParentSpanId, want.ParentSpanID)
				}
				if s.Name != want.Name || s.Kind != tracepb.Span_SPAN_KIND_INTERNAL {
					t.Errorf("span %s: name %q kind %v", want.SpanID, s.Name, s.Kind)
				}
				if s.StartTimeUnixNano != uint64(c.Start.UnixNano()) || s.EndTimeUnixNano != uint64(c.Start.Add(c.Duration).UnixNano()) {
					t.Errorf("span %s: %d..%d, want %d+%d", want.SpanID, s.StartTimeUnixNano, s.EndTimeUnixNano, c.Start.UnixNano(), c.Duration)
				}
				wantStatus := tracepb.Status_STATUS_CODE_UNSET
				if c.Unfinished {
					wantStatus = tracepb.Status_STATUS_CODE_ERROR
				}
				if s.Status.GetCode() != wantStatus || s.Status.GetMessage() != c.Reason {
					t.Errorf("span %s: status %v %q", want.SpanID, s.Status.GetCode(), s.Status.GetMessage())
				}
				a := otlptest.Attributes(s.Attributes)
				if a["code.function"] != c.Func || a["code.lineno"] != int64(c.Stack[0].Line) ||
					a["goroutine.id"] != int64(c.Goroutine) || a["endpoint.id"] != "1234" ||
					!strings.HasPrefix(a["code.stacktrace"].(string), c.Func+" ") {
					t.Errorf("span %s: attributes %v", want.SpanID, a)
				}
			}
		})
	}
}

// The OTLP exporter renders spans itself: what it uploads is exactly what
// the SDK's own OTLP exporter uploads for the same span data, given to it
// through the SDK's test stubs.
func TestOTLPMatchesSDK(t *testing.T) {
	ctx := context.Background()
	spans := testSpans()
	bare := spans[0]
	bare.Resource, bare.Attributes = nil, nil
	spans = append(spans, bare)

	sdk := &capturingClient{}
	exp, err := otlptrace.New(ctx, sdk)
	if err != nil {
		t.Fatal(err)
	}
	stubs := make([]sdktrace.ReadOnlySpan, len(spans))
	for i, s := range spans {
		stub := tracetest.SpanStub{
			Name:                 s.Name,
			SpanContext:          trace.NewSpanContext(trace.SpanContextConfig{TraceID: s.TraceID, SpanID: s.SpanID, TraceFlags: trace.FlagsSampled}),
			SpanKind:             s.Kind,
			StartTime:            s.Start,
			EndTime:              s.End,
			Attributes:           s.Attributes,
			Status:               sdktrace.Status{Code: s.StatusCode, Description: s.StatusMessage},
			Resource:             s.Resource,
			InstrumentationScope: instrumentation.Scope{Name: ScopeName},
		}
		if s.ParentSpanID.IsValid() {
			stub.Parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: s.TraceID, SpanID: s.ParentSpanID, TraceFlags: trace.FlagsSampled})
		}
		stubs[i] = stub.Snapshot()
	}
	if err := exp.ExportSpans(ctx, stubs); err != nil {
		t.Fatal(err)
	}

	ours := &capturingClient{}
	e := &OTLPExporter{client: ours}
	if err := e.Export(ctx, spans); err != nil {
		t.Fatal(err)
	}
	// The SDK orders resources by map iteration: compare them by resource.
	want, got := byResource(sdk.uploads[0]), byResource(ours.uploads[0])
	if len(got) != 2 || len(got) != len(want) {
		t.Fatalf("%d resources, the SDK sent %d", len(got), len(want))
	}
	for k, w := range want {
		if !proto.Equal(got[k], w) {
			t.Errorf("resource %q:\ngot  %v\nwant %v", k, got[k], w)
		}
	}
}

type capturingClient struct{ uploads [][]*tracepb.ResourceSpans }

func (c *capturingClient) Start(context.Context) error { return nil }
func (c *capturingClient) Stop(context.Context) error  { return nil }
func (c *capturingClient) UploadTraces(_ context.Context, rs []*tracepb.ResourceSpans) error {
	c.uploads = append(c.uploads, rs)
	return nil
}

func byResource(rss []*tracepb.ResourceSpans) map[string]*tracepb.ResourceSpans {
	m := map[string]*tracepb.ResourceSpans{}
	for _, rs := range rss {
		m[rs.GetResource().String()] = rs
	}
	return m
}

package export

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver collects what OTLP clients send.
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer

	mu      sync.Mutex
	reqs    []*collectortrace.ExportTraceServiceRequest
	headers []string
}

func (r *otlpReceiver) Export(ctx context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.add(req, strings.Join(md.Get("x-tenant"), ","))
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (r *otlpReceiver) add(req *collectortrace.ExportTraceServiceRequest, header string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, req)
	r.headers = append(r.headers, header)
}

func (r *otlpReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil || req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	var msg collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.add(&msg, req.Header.Get("X-Tenant"))
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

func startGRPCReceiver(t *testing.T) (*otlpReceiver, string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	r := &otlpReceiver{}
	collectortrace.RegisterTraceServiceServer(srv, r)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return r, ln.Addr().String()
}

func startHTTPReceiver(t *testing.T) (*otlpReceiver, string) {
	r := &otlpReceiver{}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, strings.TrimPrefix(srv.URL, "http://")
}

func anyValue(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	}
	return v.String()
}

func kvMap(kvs []*commonpb.KeyValue) map[string]any {
	m := map[string]any{}
	for _, kv := range kvs {
		m[kv.Key] = anyValue(kv.Value)
	}
	return m
}

func TestOTLP(t *testing.T) {
	for _, transport := range []string{"grpc", "http"} {
		t.Run(transport, func(t *testing.T) {
			var (
				recv *otlpReceiver
				addr string
			)
			if transport == "grpc" {
				recv, addr = startGRPCReceiver(t)
			} else {
				recv, addr = startHTTPReceiver(t)
			}
			ctx := context.Background()
			e, err := NewOTLPExporter(ctx, OTLPConfig{
				HTTP:     transport == "http",
				Endpoint: addr,
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

			recv.mu.Lock()
			defer recv.mu.Unlock()
			var got []*tracepb.Span
			for i, req := range recv.reqs {
				if recv.headers[i] != "node-1" {
					t.Errorf("request %d header x-tenant %q", i, recv.headers[i])
				}
				for _, rs := range req.ResourceSpans {
					res := kvMap(rs.Resource.Attributes)
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
				a := kvMap(s.Attributes)
				if a["code.function"] != c.Func || a["code.lineno"] != int64(c.Stack[0].Line) ||
					a["goroutine.id"] != int64(c.Goroutine) || a["endpoint.id"] != "1234" ||
					!strings.HasPrefix(a["code.stacktrace"].(string), c.Func+" ") {
					t.Errorf("span %s: attributes %v", want.SpanID, a)
				}
			}
		})
	}
}

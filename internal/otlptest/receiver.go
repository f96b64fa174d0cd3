package otlptest

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// Receiver records the trace export requests sent to it.
type Receiver struct {
	addr string
	cert *x509.Certificate

	mu   sync.Mutex
	reqs []Request
}

// Request is one export request as received.
type Request struct {
	Header http.Header // the HTTP headers, or the gRPC metadata
	Traces *coltracepb.ExportTraceServiceRequest
}

// Span is one received span, flattened with its resource and scope.
type Span struct {
	Name          string
	TraceID       string // hex
	SpanID        string
	ParentSpanID  string // empty for root spans
	Start         time.Time
	Duration      time.Duration
	Attributes    map[string]any // values as Attributes converts them
	Resource      map[string]any
	Scope         string
	StatusCode    tracepb.Status_StatusCode
	StatusMessage string
}

// NewGRPC starts an OTLP/gRPC receiver on a free loopback port, without
// TLS; tb's cleanup stops it.
func NewGRPC(tb testing.TB) *Receiver {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r := &Receiver{addr: ln.Addr().String()}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, traceService{r: r})
	go srv.Serve(ln)
	tb.Cleanup(srv.Stop)
	return r
}

// NewHTTP starts an OTLP/HTTP receiver (protobuf on /v1/traces) on a free
// loopback port; tb's cleanup stops it.
func NewHTTP(tb testing.TB) *Receiver {
	r := &Receiver{}
	srv := httptest.NewServer(http.HandlerFunc(r.serveHTTP))
	tb.Cleanup(srv.Close)
	r.addr = srv.Listener.Addr().String()
	return r
}

// NewHTTPTLS is NewHTTP over TLS with a certificate of its own: see
// Certificate.
func NewHTTPTLS(tb testing.TB) *Receiver {
	r := &Receiver{}
	srv := httptest.NewTLSServer(http.HandlerFunc(r.serveHTTP))
	tb.Cleanup(srv.Close)
	r.addr = srv.Listener.Addr().String()
	r.cert = srv.Certificate()
	return r
}

// Addr is the receiver's host:port, the endpoint to give an exporter.
func (r *Receiver) Addr() string { return r.addr }

// Certificate is the certificate a client of NewHTTPTLS must trust; nil
// without TLS.
func (r *Receiver) Certificate() *x509.Certificate { return r.cert }

// Requests returns the requests received so far, in order.
func (r *Receiver) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.reqs...)
}

// Spans returns the spans of every request received so far, in order.
func (r *Receiver) Spans() []Span {
	var spans []Span
	for _, req := range r.Requests() {
		for _, rs := range req.Traces.ResourceSpans {
			res := Attributes(rs.GetResource().GetAttributes())
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					start := time.Unix(0, int64(s.StartTimeUnixNano))
					spans = append(spans, Span{
						Name:          s.Name,
						TraceID:       hex.EncodeToString(s.TraceId),
						SpanID:        hex.EncodeToString(s.SpanId),
						ParentSpanID:  hex.EncodeToString(s.ParentSpanId),
						Start:         start,
						Duration:      time.Unix(0, int64(s.EndTimeUnixNano)).Sub(start),
						Attributes:    Attributes(s.Attributes),
						Resource:      res,
						Scope:         ss.GetScope().GetName(),
						StatusCode:    s.GetStatus().GetCode(),
						StatusMessage: s.GetStatus().GetMessage(),
					})
				}
			}
		}
	}
	return spans
}

// Attributes converts OTLP attributes to a map of string, int64, float64
// or bool values; other kinds of value become their protobuf text.
func Attributes(kvs []*commonpb.KeyValue) map[string]any {
	m := map[string]any{}
	for _, kv := range kvs {
		switch v := kv.Value.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.Key] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.Key] = v.IntValue
		case *commonpb.AnyValue_DoubleValue:
			m[kv.Key] = v.DoubleValue
		case *commonpb.AnyValue_BoolValue:
			m[kv.Key] = v.BoolValue
		default:
			m[kv.Key] = kv.Value.String()
		}
	}
	return m
}

func (r *Receiver) add(req *coltracepb.ExportTraceServiceRequest, h http.Header) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, Request{Header: h, Traces: req})
}

type traceService struct {
	coltracepb.UnimplementedTraceServiceServer
	r *Receiver
}

func (s traceService) Export(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	h := http.Header{}
	for k, vs := range md {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	s.r.add(req, h)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (r *Receiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil || req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	var msg coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.add(&msg, req.Header.Clone())
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

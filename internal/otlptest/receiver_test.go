package otlptest

import (
	"bytes"
	"context"
	"net/http"
	"reflect"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

func str(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

var (
	start = time.Unix(1700000000, 123)
	req   = &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", "cilium-agent")}},
		ScopeSpans: []*tracepb.ScopeSpans{{
			Scope: &commonpb.InstrumentationScope{Name: "scope"},
			Spans: []*tracepb.Span{{
				TraceId:           bytes.Repeat([]byte{1}, 16),
				SpanId:            bytes.Repeat([]byte{2}, 8),
				ParentSpanId:      bytes.Repeat([]byte{3}, 8),
				Name:              "regenerate",
				StartTimeUnixNano: uint64(start.UnixNano()),
				EndTimeUnixNano:   uint64(start.Add(1500 * time.Microsecond).UnixNano()),
				Attributes: []*commonpb.KeyValue{str("endpoint.id", "7"),
					{Key: "goroutine.id", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 42}}}},
				Status: &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "unfinished"},
			}},
		}},
	}}}
	want = Span{
		Name:          "regenerate",
		TraceID:       "01010101010101010101010101010101",
		SpanID:        "0202020202020202",
		ParentSpanID:  "0303030303030303",
		Start:         start,
		Duration:      1500 * time.Microsecond,
		Attributes:    map[string]any{"endpoint.id": "7", "goroutine.id": int64(42)},
		Resource:      map[string]any{"service.name": "cilium-agent"},
		Scope:         "scope",
		StatusCode:    tracepb.Status_STATUS_CODE_ERROR,
		StatusMessage: "unfinished",
	}
)

func check(t *testing.T, r *Receiver) {
	t.Helper()
	reqs, spans := r.Requests(), r.Spans()
	if len(reqs) != 1 || reqs[0].Header.Get("X-Tenant") != "node-1" {
		t.Fatalf("requests %+v", reqs)
	}
	if !reflect.DeepEqual(spans, []Span{want}) {
		t.Errorf("spans %+v, want %+v", spans, want)
	}
}

func TestGRPC(t *testing.T) {
	r := NewGRPC(t)
	cc, err := grpc.NewClient(r.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-tenant", "node-1")
	if _, err := coltracepb.NewTraceServiceClient(cc).Export(ctx, req); err != nil {
		t.Fatal(err)
	}
	check(t, r)
}

func TestHTTP(t *testing.T) {
	r := NewHTTP(t)
	body, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	hr, err := http.NewRequest("POST", "http://"+r.Addr()+"/v1/traces", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", "application/x-protobuf")
	hr.Header.Set("X-Tenant", "node-1")
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s", resp.Status)
	}
	check(t, r)
}

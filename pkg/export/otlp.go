package export

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/trace"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/credentials"
)

// OTLPConfig configures an OTLPExporter. Fields left empty fall back to the
// standard OTEL_EXPORTER_OTLP_* environment variables, then to the OTel
// SDK's defaults (localhost:4317 for gRPC, localhost:4318 for HTTP).
type OTLPConfig struct {
	// HTTP selects OTLP over HTTP (protobuf); the default is gRPC.
	HTTP bool
	// Endpoint is host:port.
	Endpoint string
	// URLPath is the HTTP path; default /v1/traces.
	URLPath string
	// Insecure disables TLS.
	Insecure bool
	// TLS configures TLS when Insecure is not set; nil uses the system roots.
	TLS     *tls.Config
	Headers map[string]string
	// Timeout bounds one export, the SDK's retries included; default 10s.
	Timeout time.Duration
}

// OTLPExporter sends spans to an OpenTelemetry collector (or any OTLP
// receiver) through the OTel SDK's OTLP clients, which do their own
// retrying with backoff. It renders the spans as OTLP protobuf itself:
// they are finished data with IDs and timestamps of their own, which the
// SDK's span types only accept through its testing helpers.
type OTLPExporter struct {
	client otlptrace.Client
	guard
}

var _ Exporter = (*OTLPExporter)(nil)

// NewOTLPExporter returns an exporter for cfg. It does not wait for the
// receiver to be reachable.
func NewOTLPExporter(ctx context.Context, cfg OTLPConfig) (*OTLPExporter, error) {
	var client otlptrace.Client
	if cfg.HTTP {
		var opts []otlptracehttp.Option
		if cfg.Endpoint != "" {
			opts = append(opts, otlptracehttp.WithEndpoint(cfg.Endpoint))
		}
		if cfg.URLPath != "" {
			opts = append(opts, otlptracehttp.WithURLPath(cfg.URLPath))
		}
		if cfg.Insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		} else if cfg.TLS != nil {
			opts = append(opts, otlptracehttp.WithTLSClientConfig(cfg.TLS))
		}
		if len(cfg.Headers) > 0 {
			opts = append(opts, otlptracehttp.WithHeaders(cfg.Headers))
		}
		if cfg.Timeout > 0 {
			opts = append(opts, otlptracehttp.WithTimeout(cfg.Timeout))
		}
		client = otlptracehttp.NewClient(opts...)
	} else {
		var opts []otlptracegrpc.Option
		if cfg.Endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpoint(cfg.Endpoint))
		}
		if cfg.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		} else if cfg.TLS != nil {
			opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(cfg.TLS)))
		}
		if len(cfg.Headers) > 0 {
			opts = append(opts, otlptracegrpc.WithHeaders(cfg.Headers))
		}
		if cfg.Timeout > 0 {
			opts = append(opts, otlptracegrpc.WithTimeout(cfg.Timeout))
		}
		client = otlptracegrpc.NewClient(opts...)
	}
	if err := client.Start(ctx); err != nil {
		return nil, fmt.Errorf("otlp: %w", err)
	}
	return &OTLPExporter{client: client}, nil
}

// Export implements Exporter.
func (e *OTLPExporter) Export(ctx context.Context, spans []Span) error {
	return e.export(func() error {
		if len(spans) == 0 {
			return nil
		}
		if err := e.client.UploadTraces(ctx, OTLPSpans(spans)); err != nil {
			return fmt.Errorf("otlp: %w", err)
		}
		return nil
	})
}

// Shutdown implements Exporter.
func (e *OTLPExporter) Shutdown(ctx context.Context) error {
	return e.shutdown(func() error { return e.client.Stop(ctx) })
}

// OTLPSpans renders spans, each followed by its children, as the SDK's OTLP
// exporter renders the same span data: one ResourceSpans per resource
// (schemaless, as SpanBuilder makes them), all in the tracer's scope, every
// span sampled and its parent local.
func OTLPSpans(spans []Span) []*tracepb.ResourceSpans {
	spans = withChildren(spans)
	var out []*tracepb.ResourceSpans
	scopes := map[attribute.Distinct]*tracepb.ScopeSpans{}
	for i := range spans {
		s := &spans[i]
		ss := scopes[s.Resource.Equivalent()]
		if ss == nil {
			ss = &tracepb.ScopeSpans{Scope: &commonpb.InstrumentationScope{Name: ScopeName}}
			scopes[s.Resource.Equivalent()] = ss
			rs := &tracepb.ResourceSpans{ScopeSpans: []*tracepb.ScopeSpans{ss}}
			if s.Resource != nil {
				rs.Resource = &resourcepb.Resource{Attributes: otlpAttributes(s.Resource.Attributes())}
			}
			out = append(out, rs)
		}
		ss.Spans = append(ss.Spans, otlpSpan(s))
	}
	return out
}

func otlpSpan(s *Span) *tracepb.Span {
	tid, sid := s.TraceID, s.SpanID
	o := &tracepb.Span{
		TraceId: tid[:],
		SpanId:  sid[:],
		Flags:   uint32(trace.FlagsSampled) | uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK),
		Name:    s.Name,
		// The OTel API numbers span kinds as OTLP does.
		Kind:              tracepb.Span_SpanKind(s.Kind),
		StartTimeUnixNano: uint64(max(0, s.Start.UnixNano())),
		EndTimeUnixNano:   uint64(max(0, s.End.UnixNano())),
		Attributes:        otlpAttributes(s.Attributes),
		Status:            &tracepb.Status{Code: otlpStatus(s.StatusCode), Message: s.StatusMessage},
	}
	if s.ParentSpanID.IsValid() {
		pid := s.ParentSpanID
		o.ParentSpanId = pid[:]
	}
	return o
}

// otlpStatus maps status codes, which the OTel API and OTLP number
// differently.
func otlpStatus(c codes.Code) tracepb.Status_StatusCode {
	switch c {
	case codes.Ok:
		return tracepb.Status_STATUS_CODE_OK
	case codes.Error:
		return tracepb.Status_STATUS_CODE_ERROR
	}
	return tracepb.Status_STATUS_CODE_UNSET
}

// otlpAttributes converts the attributes spans carry: SpanBuilder and
// Resource make only strings and integers.
func otlpAttributes(kvs []attribute.KeyValue) []*commonpb.KeyValue {
	if len(kvs) == 0 {
		return nil
	}
	out := make([]*commonpb.KeyValue, len(kvs))
	for i, kv := range kvs {
		v := &commonpb.AnyValue{}
		if kv.Value.Type() == attribute.INT64 {
			v.Value = &commonpb.AnyValue_IntValue{IntValue: kv.Value.AsInt64()}
		} else {
			v.Value = &commonpb.AnyValue_StringValue{StringValue: kv.Value.Emit()}
		}
		out[i] = &commonpb.KeyValue{Key: string(kv.Key), Value: v}
	}
	return out
}

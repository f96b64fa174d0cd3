package export

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
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
// receiver) through the OTel SDK's OTLP exporters, which do their own
// retrying with backoff.
type OTLPExporter struct {
	exp *otlptrace.Exporter
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
	exp, err := otlptrace.New(ctx, client)
	if err != nil {
		return nil, fmt.Errorf("otlp: %w", err)
	}
	return &OTLPExporter{exp: exp}, nil
}

// Export implements Exporter.
func (e *OTLPExporter) Export(ctx context.Context, spans []Span) error {
	return e.export(func() error {
		if err := e.exp.ExportSpans(ctx, ReadOnlySpans(spans)); err != nil {
			return fmt.Errorf("otlp: %w", err)
		}
		return nil
	})
}

// Shutdown implements Exporter.
func (e *OTLPExporter) Shutdown(ctx context.Context) error {
	return e.shutdown(func() error { return e.exp.Shutdown(ctx) })
}

// ReadOnlySpans converts spans for the OTel SDK's exporters
// (sdktrace.SpanExporter), which accept only sdktrace.ReadOnlySpan; the
// tracetest stubs are the SDK's way of making one with explicit IDs and
// timestamps.
func ReadOnlySpans(spans []Span) []sdktrace.ReadOnlySpan {
	ro := make([]sdktrace.ReadOnlySpan, len(spans))
	for i := range spans {
		s := &spans[i]
		stub := tracetest.SpanStub{
			Name: s.Name,
			SpanContext: trace.NewSpanContext(trace.SpanContextConfig{
				TraceID:    s.TraceID,
				SpanID:     s.SpanID,
				TraceFlags: trace.FlagsSampled,
			}),
			SpanKind:             s.Kind,
			StartTime:            s.Start,
			EndTime:              s.End,
			Attributes:           s.Attributes,
			Status:               sdktrace.Status{Code: s.StatusCode, Description: s.StatusMessage},
			Resource:             s.Resource,
			InstrumentationScope: instrumentation.Scope{Name: ScopeName},
		}
		if s.ParentSpanID.IsValid() {
			stub.Parent = trace.NewSpanContext(trace.SpanContextConfig{
				TraceID:    s.TraceID,
				SpanID:     s.ParentSpanID,
				TraceFlags: trace.FlagsSampled,
			})
		}
		ro[i] = stub.Snapshot()
	}
	return ro
}

// Package export turns calls into OpenTelemetry spans and writes them to
// ClickHouse, OTLP receivers, the terminal and profile files.
//
// A SpanBuilder makes one span per call: trace IDs are a random per-session
// prefix followed by the call's root ID, span IDs are call IDs, so that the
// call trees formed in BPF need no buffering here. A call's system calls and
// child processes are child spans of its span (Span.Children), which the
// OTLP and ClickHouse exporters send as ordinary spans. A Pipeline sits between
// the event reader and the exporters: Enqueue never blocks, every queue is
// bounded, and what does not fit is dropped and counted (Stats).
//
// Exporters implement Exporter: ClickHouseExporter (the OpenTelemetry
// Collector's otel_traces schema, see TracesSchema), OTLPExporter (gRPC or
// HTTP, through the OTel SDK's OTLP clients), TextExporter and
// JSONExporter, and PprofExporter and FoldedExporter, which weight each
// stack by the self time of its calls. They share one shutdown guard:
// Export after Shutdown returns ErrShutdown.
//
// ExporterConfig describes an exporter as the daemon's YAML file and
// `tracer trace`'s flags do; NewExporters builds exporters from a list of
// them, for both.
package export

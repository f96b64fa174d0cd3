// Package otlptest is an OpenTelemetry trace receiver for tests: it accepts
// OTLP export requests over gRPC or over HTTP (protobuf), keeps each with
// its headers, and flattens the spans they carry for checking.
package otlptest

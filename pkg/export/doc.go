// Package export turns calls into OpenTelemetry spans and writes them to
// ClickHouse, OTLP, the terminal and profile files.
package export

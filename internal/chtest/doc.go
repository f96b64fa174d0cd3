// Package chtest is a ClickHouse native-protocol server for tests: it speaks
// just enough of the protocol, with ch-go's proto package, for clickhouse-go
// v2 and ch-go to connect, run DDL and INSERT spans into the OpenTelemetry
// collector's otel_traces table. It records every query and decodes every
// inserted row, so a test can check what crossed the wire without a real
// ClickHouse (none recent enough installs on the build machines). Listen
// starts one for the benchmarks, which only counts the rows.
package chtest

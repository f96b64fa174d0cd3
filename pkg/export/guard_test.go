package export

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// Every exporter keeps the same contract: Export after Shutdown is refused
// with ErrShutdown, and a second Shutdown neither fails nor writes again.
func TestShutdownContract(t *testing.T) {
	ctx := context.Background()
	var out bytes.Buffer
	ch, err := NewClickHouseExporter(ClickHouseConfig{Addrs: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	otlp, err := NewOTLPExporter(ctx, OTLPConfig{Endpoint: "127.0.0.1:1", Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	for name, e := range map[string]Exporter{
		"text":       NewTextExporter(&out, true),
		"json":       NewJSONExporter(&out),
		"memory":     &MemoryExporter{},
		"pprof":      NewPprofExporter(&out),
		"folded":     NewFoldedExporter(&out),
		"clickhouse": ch,
		"otlp":       otlp,
	} {
		t.Run(name, func(t *testing.T) {
			if err := e.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			written := out.Len()
			if err := e.Export(ctx, testSpans()); !errors.Is(err, ErrShutdown) {
				t.Errorf("Export after Shutdown: %v", err)
			}
			if err := e.Shutdown(ctx); err != nil {
				t.Errorf("second Shutdown: %v", err)
			}
			if out.Len() != written {
				t.Errorf("wrote %d bytes after Shutdown", out.Len()-written)
			}
		})
	}
}

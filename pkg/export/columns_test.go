package export

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/cilium-tracer/tracer/internal/chtest"
	"github.com/cilium-tracer/tracer/pkg/calls"
)

// TestClickHouseWideDictionaries inserts one batch whose LowCardinality
// dictionaries outgrow one-byte keys (300 span names) and two-byte keys
// (70,000 attribute keys), with attribute values of every scalar type, and
// checks every row.
func TestClickHouseWideDictionaries(t *testing.T) {
	const n = 70_000
	b := NewSpanBuilder(testResource)
	spans := make([]Span, n)
	for i := range spans {
		spans[i] = b.Build(calls.Call{
			Func:     fmt.Sprintf("github.com/cilium/cilium/pkg/policy.f%d", i%300),
			ID:       uint64(i + 1),
			RootID:   uint64(i/10 + 1),
			ParentID: uint64(i % 10),
			Start:    testT0.Add(time.Duration(i) * time.Microsecond),
			Duration: time.Duration(i) * time.Nanosecond,
			Attrs:    []calls.Attr{{Key: fmt.Sprintf("arg.k%d", i), Value: fmt.Sprint(i)}},
		})
		spans[i].Attributes = append(spans[i].Attributes,
			attribute.Bool("flag", i%2 == 0), attribute.Float64("ratio", float64(i)/7), attribute.Int64("neg", -int64(i)))
	}
	srv := chtest.New(t, 25, 8)
	e, err := NewClickHouseExporter(ClickHouseConfig{Addrs: []string{srv.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(context.Background())
	if err := e.Export(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	_, rows := srv.Snapshot()
	want := make([]chtest.Row, n)
	for i, s := range spans {
		want[i] = expectedRow(s)
	}
	compareRows(t, rows, want)
}

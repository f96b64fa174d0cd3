package export

import (
	"context"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/chtest"
)

func BenchmarkBuild(b *testing.B) {
	sb := NewSpanBuilder(testResource)
	c := regenerationTree(1, testT0)[0]
	b.ReportAllocs()
	for b.Loop() {
		sb.Build(c)
	}
}

// BenchmarkEnqueue measures what the event reader pays per call.
func BenchmarkEnqueue(b *testing.B) {
	p := NewPipeline(NewSpanBuilder(testResource), map[string]Exporter{"m": discard{}}, PipelineConfig{QueueSize: 1 << 16})
	defer p.Shutdown(context.Background())
	c := regenerationTree(1, testT0)[0]
	b.ReportAllocs()
	for b.Loop() {
		p.Enqueue(c)
	}
	b.StopTimer()
	st := p.Stats()
	b.ReportMetric(float64(st.Dropped)/float64(st.Received), "dropped/op")
}

type discard struct{}

func (discard) Export(context.Context, []Span) error { return nil }
func (discard) Shutdown(context.Context) error       { return nil }

// BenchmarkClickHouseInsert measures the exporter's side of an INSERT of
// 512 spans through clickhouse-go (LZ4) into the test server.
func BenchmarkClickHouseInsert(b *testing.B) {
	srv := chtest.New(b, 25, 8)
	e, err := NewClickHouseExporter(ClickHouseConfig{Addrs: []string{srv.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Shutdown(context.Background())
	sb := NewSpanBuilder(testResource)
	var spans []Span
	for i := range 512 / 3 {
		for _, c := range regenerationTree(uint64(1+3*i), testT0.Add(time.Duration(i)*time.Millisecond)) {
			spans = append(spans, sb.Build(c))
		}
	}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if err := e.Export(ctx, spans); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(spans))*float64(b.N)/b.Elapsed().Seconds(), "spans/s")
}

package export_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/export"
	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// The tracer's wiring: one span builder per session, a pipeline fanning
// calls out to several exporters, a non-blocking Enqueue in the event
// reader, and Shutdown to flush at exit.
func Example() {
	builder := export.NewSpanBuilder(export.Resource{
		HostName:      "node-1",
		ContainerID:   "3f1c0ffee",
		PID:           4242,
		CiliumVersion: "1.18.3",
		GoVersion:     "go1.24.9",
	})

	// Exporters a real deployment would add (each does nothing until its
	// first Export, so an absent server never stops the tracer):
	//
	//	password, _ := export.ClickHousePassword(passwordFile) // or $CLICKHOUSE_PASSWORD
	//	ch, _ := export.NewClickHouseExporter(export.ClickHouseConfig{
	//		Addrs: []string{"clickhouse:9000"}, Password: password,
	//		Schema: export.TracesSchema{TTL: 72 * time.Hour},
	//	})
	//	otlp, _ := export.NewOTLPExporter(ctx, export.OTLPConfig{Endpoint: "collector:4317", Insecure: true})
	//	prof := export.NewPprofExporter(pprofFile)
	p := export.NewPipeline(builder, map[string]export.Exporter{
		"terminal": export.NewTextExporter(os.Stdout, false),
	}, export.PipelineConfig{QueueSize: 4096, BatchSize: 256, BatchTimeout: time.Second})

	// The event reader: Enqueue never blocks, and says whether the call
	// was dropped.
	start := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	p.Enqueue(calls.Call{
		Func: "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF",
		ID:   2, ParentID: 1, RootID: 1, Goroutine: 77,
		Start: start.Add(2 * time.Millisecond), Duration: 40 * time.Millisecond,
		Stack: []symbols.Frame{{Func: "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF", File: "pkg/endpoint/bpf.go", Line: 588}},
	})
	p.Enqueue(calls.Call{
		Func: "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate",
		ID:   1, RootID: 1, Goroutine: 77,
		Start: start, Duration: 50 * time.Millisecond,
		Unfinished: true, Reason: "goroutine panicked",
	})

	if err := p.Shutdown(context.Background()); err != nil {
		fmt.Println(err)
	}
	st := p.Stats()
	fmt.Printf("received %d, dropped %d, exported to terminal %d\n",
		st.Received, st.Dropped, st.Exporters["terminal"].Exported)
	// Output:
	// 12:00:00.002000         40ms g=77     endpoint.(*Endpoint).regenerateBPF
	// 12:00:00.000000         50ms g=77     endpoint.(*Endpoint).regenerate UNFINISHED: goroutine panicked
	// received 2, dropped 0, exported to terminal 2
}

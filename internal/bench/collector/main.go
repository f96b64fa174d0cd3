// Command collector is the OpenTelemetry Collector's side of internal/bench's
// side-by-side export benchmark: it feeds recorded spans to the collector's
// ClickHouse exporter (exporter/clickhouseexporter) as the collector does,
// through the factory with its default configuration and ConsumeTraces,
// and prints what it measured as JSON. Its module is its own, so that the
// collector's dependencies stay out of the tracer's build.
//
// The module requires clickhouse-go v2.51.0, the tracer's, over the
// v2.47.0 of the exporter's release: there a finished batch's context
// watchdog may close the connection it already returned to the pool, so
// that at GOMAXPROCS=1 most rounds failed and waited out the retry backoff.
//
// The spans come as OTLP export requests, each after its length as a
// uvarint. The sending queue is off, as in a collector whose batches go
// straight out: ConsumeTraces returns when the INSERT is done, as the
// tracer's Export does.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/clickhouseexporter"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// run is what was measured; internal/bench reads the same JSON.
type run struct {
	Spans      int     `json:"spans"`
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpu_seconds"`
	Mallocs    uint64  `json:"mallocs"`
	Bytes      uint64  `json:"bytes"`
}

func main() {
	var (
		addr       = flag.String("addr", "", "ClickHouse native-protocol `host:port`")
		spans      = flag.String("spans", "", "`file` of length-prefixed OTLP export requests")
		minSeconds = flag.Float64("min-seconds", 1, "repeat the spans until this many seconds have passed")
	)
	flag.Parse()
	r, err := measure(*addr, *spans, *minSeconds)
	if err == nil {
		err = json.NewEncoder(os.Stdout).Encode(r)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "collector: %v\n", err)
		os.Exit(1)
	}
}

func readBatches(path string) ([]ptrace.Traces, int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	var (
		out []ptrace.Traces
		n   int
		um  ptrace.ProtoUnmarshaler
	)
	for len(b) > 0 {
		size, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < size {
			return nil, 0, errors.New(path + ": truncated")
		}
		td, err := um.UnmarshalTraces(b[k : k+int(size)])
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, td)
		n += td.SpanCount()
		b = b[k+int(size):]
	}
	if n == 0 {
		return nil, 0, errors.New(path + ": no spans")
	}
	return out, n, nil
}

func measure(addr, path string, minSeconds float64) (run, error) {
	if addr == "" || path == "" {
		return run{}, errors.New("-addr and -spans are required")
	}
	batches, n, err := readBatches(path)
	if err != nil {
		return run{}, err
	}
	ctx := context.Background()
	f := clickhouseexporter.NewFactory()
	cfg := f.CreateDefaultConfig().(*clickhouseexporter.Config)
	cfg.Endpoint = "tcp://" + addr
	cfg.QueueSettings = configoptional.None[exporterhelper.QueueBatchConfig]()
	exp, err := f.CreateTraces(ctx, exportertest.NewNopSettings(f.Type()), cfg)
	if err != nil {
		return run{}, err
	}
	if err := exp.Start(ctx, componenttest.NewNopHost()); err != nil {
		return run{}, err
	}
	defer exp.Shutdown(ctx)
	round := func() error {
		for _, td := range batches {
			if err := exp.ConsumeTraces(ctx, td); err != nil {
				return err
			}
		}
		return nil
	}
	// The first round connects, as the tracer's side's does.
	if err := round(); err != nil {
		return run{}, err
	}

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	mallocs, bytes := ms.Mallocs, ms.TotalAlloc
	cpu0 := cpuTime()
	start := time.Now()
	var r run
	for r.Spans == 0 || time.Since(start).Seconds() < minSeconds {
		if err := round(); err != nil {
			return r, err
		}
		r.Spans += n
	}
	r.Seconds = time.Since(start).Seconds()
	r.CPUSeconds = (cpuTime() - cpu0).Seconds()
	runtime.ReadMemStats(&ms)
	r.Mallocs, r.Bytes = ms.Mallocs-mallocs, ms.TotalAlloc-bytes
	return r, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"golang.org/x/mod/modfile"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/cilium-tracer/tracer/internal/chtest"
	"github.com/cilium-tracer/tracer/pkg/export"
	"github.com/cilium-tracer/tracer/pkg/probe"
)

// The side-by-side export benchmark: the recorded spans go, in batches of
// the pipeline's size, to the test ClickHouse server (internal/chtest) over
// loopback, once through this project's ClickHouseExporter and once through
// the OpenTelemetry Collector's clickhouseexporter, driven as the collector
// drives it (internal/bench/collector, a module of its own so that its
// dependencies stay out of the tracer's). Each exporter runs in a child
// process held to one CPU (taskset, GOMAXPROCS=1); the server runs in this
// process on the others.

// collectorDir is the collector side's module.
const collectorDir = "internal/bench/collector"

// exportChildEnv marks a child process started by runTracerExport.
const exportChildEnv = "TRACER_BENCH_EXPORT_CHILD"

// exportSpec tells the tracer's side what to export where.
type exportSpec struct {
	Root, Agent string  // to load the recorded spans
	Addr        string  // the test server
	MinSeconds  float64 // repeat the spans until this much time has passed
}

// exportRun is what one side measured; the collector side prints the same
// JSON.
type exportRun struct {
	Spans      int     `json:"spans"`
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpu_seconds"`
	Mallocs    uint64  `json:"mallocs"`
	Bytes      uint64  `json:"bytes"`
}

func (r exportRun) SpansPerSec() float64    { return float64(r.Spans) / r.Seconds }
func (r exportRun) SpansPerCPUSec() float64 { return float64(r.Spans) / r.CPUSeconds }
func (r exportRun) AllocsPerSpan() float64  { return float64(r.Mallocs) / float64(r.Spans) }
func (r exportRun) BytesPerSpan() float64   { return float64(r.Bytes) / float64(r.Spans) }

func (r exportRun) String() string {
	return fmt.Sprintf("%s spans/s, %s per CPU-second, %.1f allocs (%.0f B) per span",
		fmtCount(r.SpansPerSec()), fmtCount(r.SpansPerCPUSec()), r.AllocsPerSpan(), r.BytesPerSpan())
}

// compareResult is the best run of each side.
type compareResult struct {
	Spans, CPU        int // spans per round, the CPU both were held to
	CollectorVersion  string
	Tracer, Collector exportRun
}

// collectorVersion is the version of the collector's exporter that
// collectorDir builds.
func collectorVersion(root string) (string, error) {
	path := filepath.Join(root, collectorDir, "go.mod")
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	f, err := modfile.ParseLax(path, b, nil)
	if err != nil {
		return "", err
	}
	for _, r := range f.Require {
		if r.Mod.Path == collectorExporter {
			return r.Mod.Version, nil
		}
	}
	return "", fmt.Errorf("%s does not require %s", path, collectorExporter)
}

const collectorExporter = "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/clickhouseexporter"

// recordedSpans are the spans of the recorded samples, built as the
// pipeline builds them.
func recordedSpans(d *pipelineData) ([]export.Span, error) {
	p, err := newPipeline(d, stageSpan)
	if err != nil {
		return nil, err
	}
	spans := make([]export.Span, 0, len(d.Samples))
	for _, s := range d.Samples {
		if err := probe.Decode(s, &p.rec); err != nil {
			return nil, err
		}
		c, err := p.builder.Build(&p.rec)
		if err != nil {
			return nil, err
		}
		spans = append(spans, p.spans.Build(c))
	}
	return spans, nil
}

// batches splits spans as the pipeline batches them.
func batches(spans []export.Span) [][]export.Span {
	var out [][]export.Span
	for len(spans) > 0 {
		n := min(len(spans), chBatchRows)
		out = append(out, spans[:n])
		spans = spans[n:]
	}
	return out
}

// benchCompare runs both sides, reps times each, interleaved, and keeps
// each side's run with the most spans per CPU-second: the machine's noise
// only ever slows a run down.
func benchCompare(root, tmp string, d *pipelineData, reps int, minSeconds float64, w io.Writer) (compareResult, error) {
	if _, err := exec.LookPath("taskset"); err != nil {
		return compareResult{}, fmt.Errorf("taskset (util-linux) is needed to hold the exporters to one CPU: %w", err)
	}
	spans, err := recordedSpans(d)
	if err != nil {
		return compareResult{}, err
	}
	otlpFile := filepath.Join(tmp, "spans.otlp")
	if err := writeOTLPBatches(otlpFile, spans); err != nil {
		return compareResult{}, err
	}
	collector := filepath.Join(tmp, "collector-export")
	build := exec.Command("go", "build", "-o", collector, ".")
	build.Dir = filepath.Join(root, collectorDir)
	if out, err := build.CombinedOutput(); err != nil {
		return compareResult{}, fmt.Errorf("build %s: %w\n%s", collectorDir, err, out)
	}

	srv, err := chtest.Listen(25, 8)
	if err != nil {
		return compareResult{}, err
	}
	defer srv.Close()
	// The exporters get the last CPU; this process, the server, the others.
	cpu := runtime.NumCPU() - 1
	if cpu > 0 {
		restore, err := pinProcess(cpu)
		if err != nil {
			return compareResult{}, err
		}
		defer restore()
	}

	version, err := collectorVersion(root)
	if err != nil {
		return compareResult{}, err
	}
	res := compareResult{Spans: len(spans), CPU: cpu, CollectorVersion: version}
	spec := exportSpec{Root: root, Agent: d.Agent, Addr: srv.Addr(), MinSeconds: minSeconds}
	// Each side's rows must all reach the server: its warm-up round and
	// what it measured.
	counted := func(name string, run func() (exportRun, error)) (exportRun, error) {
		before := srv.RowCount()
		r, err := run()
		if err != nil {
			return r, fmt.Errorf("%s exporter: %w", name, err)
		}
		if got, want := srv.RowCount()-before, r.Spans+len(spans); got != want {
			return r, fmt.Errorf("%s exporter: the server got %d rows, want %d", name, got, want)
		}
		return r, nil
	}
	for range reps {
		tr, err := counted("tracer", func() (exportRun, error) { return runExportChild(cpu, spec) })
		if err != nil {
			return res, err
		}
		co, err := counted("collector", func() (exportRun, error) { return runCollector(cpu, collector, otlpFile, spec) })
		if err != nil {
			return res, err
		}
		fmt.Fprintf(w, "  tracer    %s\n  collector %s\n", tr, co)
		if res.Tracer.Spans == 0 || tr.SpansPerCPUSec() > res.Tracer.SpansPerCPUSec() {
			res.Tracer = tr
		}
		if res.Collector.Spans == 0 || co.SpansPerCPUSec() > res.Collector.SpansPerCPUSec() {
			res.Collector = co
		}
	}
	return res, nil
}

// writeOTLPBatches writes the batches of spans as OTLP export requests, each
// after its length as a uvarint: what a collector receives from the SDK.
func writeOTLPBatches(path string, spans []export.Span) error {
	var b []byte
	for _, batch := range batches(spans) {
		msg, err := proto.Marshal(&coltracepb.ExportTraceServiceRequest{ResourceSpans: export.OTLPSpans(batch)})
		if err != nil {
			return err
		}
		b = binary.AppendUvarint(b, uint64(len(msg)))
		b = append(b, msg...)
	}
	return os.WriteFile(path, b, 0o644)
}

// pinProcess holds every thread of this process off cpu until restore.
func pinProcess(cpu int) (restore func(), err error) {
	var old, others unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, err
	}
	others = old
	others.Clear(cpu)
	tids, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	set := func(s *unix.CPUSet) {
		for _, t := range tids {
			if tid, err := strconv.Atoi(t.Name()); err == nil {
				unix.SchedSetaffinity(tid, s)
			}
		}
	}
	set(&others)
	return func() { set(&old) }, nil
}

// pinned is cmd run on cpu alone, with one Go processor.
func pinned(cpu int, name string, args ...string) *exec.Cmd {
	cmd := exec.Command("taskset", append([]string{"-c", strconv.Itoa(cpu), name}, args...)...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	return cmd
}

func runExportChild(cpu int, spec exportSpec) (exportRun, error) {
	self, err := os.Executable()
	if err != nil {
		return exportRun{}, err
	}
	cmd := pinned(cpu, self)
	cmd.Env = append(cmd.Env, exportChildEnv+"=1")
	js, err := json.Marshal(spec)
	if err != nil {
		return exportRun{}, err
	}
	cmd.Stdin = bytes.NewReader(js)
	return runChild(cmd)
}

func runCollector(cpu int, bin, spans string, spec exportSpec) (exportRun, error) {
	return runChild(pinned(cpu, bin, "-addr", spec.Addr, "-spans", spans, "-min-seconds", strconv.FormatFloat(spec.MinSeconds, 'f', -1, 64)))
}

func runChild(cmd *exec.Cmd) (exportRun, error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return exportRun{}, fmt.Errorf("%w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	var r exportRun
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("child printed %q: %w", out, err)
	}
	if r.Spans == 0 || r.Seconds <= 0 || r.CPUSeconds <= 0 {
		return r, fmt.Errorf("child measured nothing: %+v", r)
	}
	return r, nil
}

// maybeExportChild is the tracer's side of benchCompare, when this process
// is its child.
func maybeExportChild() {
	if os.Getenv(exportChildEnv) == "" {
		return
	}
	var spec exportSpec
	err := json.NewDecoder(bufio.NewReader(os.Stdin)).Decode(&spec)
	var r exportRun
	if err == nil {
		r, err = tracerExport(spec)
	}
	if err == nil {
		err = json.NewEncoder(os.Stdout).Encode(r)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: export: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func tracerExport(spec exportSpec) (exportRun, error) {
	d, err := openPipeline(spec.Root, spec.Agent)
	if err != nil {
		return exportRun{}, err
	}
	defer d.File.Close()
	spans, err := recordedSpans(d)
	if err != nil {
		return exportRun{}, err
	}
	e, err := export.NewClickHouseExporter(export.ClickHouseConfig{Addrs: []string{spec.Addr}})
	if err != nil {
		return exportRun{}, err
	}
	defer e.Shutdown(context.Background())
	bs := batches(spans)
	round := func() error {
		for _, b := range bs {
			if err := e.Export(context.Background(), b); err != nil {
				return err
			}
		}
		return nil
	}
	// The first round creates the schema and connects.
	if err := round(); err != nil {
		return exportRun{}, err
	}
	return measureRounds(len(spans), spec.MinSeconds, round)
}

// measureRounds runs round, which exports n spans, until minSeconds have
// passed, at least once. internal/bench/collector measures the same way.
func measureRounds(n int, minSeconds float64, round func() error) (exportRun, error) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	mallocs, bytes := ms.Mallocs, ms.TotalAlloc
	cpu0 := cpuTime()
	start := time.Now()
	var r exportRun
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

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

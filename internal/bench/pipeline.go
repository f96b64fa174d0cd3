package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/ClickHouse/ch-go/compress"
	chproto "github.com/ClickHouse/ch-go/proto"

	"github.com/cilium-tracer/tracer/bpf/uprobes"
	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/export"
	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/session"
	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// The pipeline's test data: ring-buffer samples recorded from a traced run
// of the example agent (records.bin, one fixed-size sample after the
// other, in the BPF programs' layout: Set.Read's records encoded back, which
// loses nothing for probes without captures) and what they refer to
// (pipeline.json: the probes, the stacks, and every address as a function
// and an offset in it). Addresses are rebased onto an agent built from the
// current sources when the benchmark runs, so symbolization works on a
// real binary without one in git.
const (
	pipelineDir     = "internal/bench/testdata/pipeline"
	recordsFile     = "records.bin"
	pipelineFile    = "pipeline.json"
	recordedSamples = 4000
)

// recordPatterns are the functions traced while recording: the
// regeneration workload of the example agent.
var recordPatterns = []string{
	"github.com/cilium/cilium/pkg/endpoint.*",
	"github.com/cilium/cilium/pkg/policy.*",
	"github.com/cilium/cilium/pkg/identity/cache.*",
	"github.com/cilium/cilium/pkg/ipcache.*",
	"github.com/cilium/cilium/pkg/datapath/loader.*",
}

type pipelineMeta struct {
	GoVersion string              `json:"go_version"` // of the recorded agent
	Probes    []string            `json:"probes"`     // function names by probe ID
	Stacks    map[int32][]uint64  `json:"stacks"`     // runtime addresses, innermost first
	Addrs     map[uint64]funcAddr `json:"addrs"`      // every address in records and stacks
}

// funcAddr is an address as a function and an offset in it: what stays
// true when the agent is rebuilt.
type funcAddr struct {
	Func   string `json:"func"`
	Offset uint64 `json:"offset"`
}

// buildAgent builds the example agent as the tests do (not stripped, not
// PIE), so its addresses are those of the recording.
func buildAgent(root, dir string) (string, error) {
	out := filepath.Join(dir, "cilium-agent")
	cmd := exec.Command("go", "build", "-o", out, "./daemon")
	cmd.Dir = filepath.Join(root, "examples", "agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build example agent: %w\n%s", err, b)
	}
	return out, nil
}

// recordPipeline traces the example agent's regenerations with stacks and
// writes the samples and what they refer to under pipelineDir.
func recordPipeline(root, tmp string, w io.Writer) error {
	bin, err := buildAgent(root, tmp)
	if err != nil {
		return err
	}
	agent := exec.Command(bin, "-workers", "4", "-interval", "5ms", "-wait-start")
	stdout, err := agent.StdoutPipe()
	if err != nil {
		return err
	}
	if err := agent.Start(); err != nil {
		return err
	}
	defer func() {
		agent.Process.Kill()
		agent.Wait()
	}()
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "ready pid=") {
		return fmt.Errorf("agent did not start: %q", sc.Text())
	}
	go io.Copy(io.Discard, stdout)

	s, err := session.Start(session.Config{PID: agent.Process.Pid, Binary: bin, Funcs: recordPatterns, Stacks: true})
	if err != nil {
		return err
	}
	defer s.Close()
	if err := agent.Process.Signal(syscall.SIGUSR2); err != nil {
		return err
	}

	var (
		samples bytes.Buffer
		rec     probe.Record
		meta    = pipelineMeta{GoVersion: s.File.GoVersion, Stacks: map[int32][]uint64{}, Addrs: map[uint64]funcAddr{}}
		callers []uint64
		n       int
		noStack int
	)
	deadline := time.Now().Add(60 * time.Second)
	for n < recordedSamples {
		s.Set.SetDeadline(deadline)
		if err := s.Set.Read(&rec); err != nil {
			return fmt.Errorf("after %d records: %w", n, err)
		}
		// A negative stack ID is a stack the BPF side could not keep
		// (-EEXIST: its hash bucket held another stack); the call is
		// still reported, without frames.
		if _, ok := meta.Stacks[rec.StackID]; !ok && rec.StackID >= 0 {
			pcs, err := s.Set.Stack(rec.StackID)
			if err != nil {
				return err
			}
			meta.Stacks[rec.StackID] = pcs
		}
		if rec.StackID < 0 {
			noStack++
		}
		binary.Write(&samples, binary.LittleEndian, encodeRecord(&rec))
		callers = append(callers, rec.Caller)
		n++
	}
	for _, p := range s.Set.Probes() {
		meta.Probes = append(meta.Probes, p.Func.Name)
	}

	// Name every address by function and offset.
	funcs, err := s.File.Funcs("*")
	if err != nil {
		return err
	}
	slices.SortFunc(funcs, func(a, b symbols.Func) int { return cmpU64(a.Entry, b.Entry) })
	name := func(pc uint64) error {
		i, _ := slices.BinarySearchFunc(funcs, pc, func(f symbols.Func, pc uint64) int { return cmpU64(f.Entry, pc+1) })
		if i == 0 || pc >= funcs[i-1].End {
			return fmt.Errorf("address %#x is in no function", pc)
		}
		meta.Addrs[pc] = funcAddr{Func: funcs[i-1].Name, Offset: pc - funcs[i-1].Entry}
		return nil
	}
	for _, pc := range callers {
		if err := name(pc); err != nil {
			return err
		}
	}
	for _, pcs := range meta.Stacks {
		for _, pc := range pcs {
			if err := name(pc); err != nil {
				return err
			}
		}
	}

	dir := filepath.Join(root, pipelineDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(meta, "", "\t")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, pipelineFile), append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, recordsFile), samples.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(w, "recorded %d samples (%d without a stack), %d stacks, %d addresses, %d probes in %s\n",
		n, noStack, len(meta.Stacks), len(meta.Addrs), len(meta.Probes), dir)
	return nil
}

// recordSize is the size of a sample without captured values.
const recordSize = int(unsafe.Sizeof(uprobes.UprobesEvent{}))

// encodeRecord is the sample the BPF programs wrote for r, a record of a
// probe without captures.
func encodeRecord(r *probe.Record) uprobes.UprobesEvent {
	return uprobes.UprobesEvent{
		Id: r.ID, ParentId: r.ParentID, RootId: r.RootID,
		StartNs: r.Start, EndNs: r.End,
		Goid: r.Goroutine, Depth: r.Depth, Caller: r.Caller,
		ProbeId: uint32(r.Probe), StackId: r.StackID, Kind: uint32(r.Kind), Tgid: uint32(r.PID),
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// pipelineData is the recording, rebased onto a freshly built agent.
type pipelineData struct {
	Agent   string // the example agent built from the current sources
	File    *symbols.File
	Probes  []probe.Probe
	Samples [][]byte
	Stacks  map[int32][]uint64
}

// loadPipeline builds the agent and rebases the recording onto it.
func loadPipeline(root, tmp string) (*pipelineData, error) {
	bin, err := buildAgent(root, tmp)
	if err != nil {
		return nil, err
	}
	return openPipeline(root, bin)
}

// openPipeline rebases the recording onto bin, an agent built by buildAgent.
func openPipeline(root, bin string) (*pipelineData, error) {
	dir := filepath.Join(root, pipelineDir)
	raw, err := os.ReadFile(filepath.Join(dir, recordsFile))
	if err != nil {
		return nil, err
	}
	js, err := os.ReadFile(filepath.Join(dir, pipelineFile))
	if err != nil {
		return nil, err
	}
	var meta pipelineMeta
	if err := json.Unmarshal(js, &meta); err != nil {
		return nil, fmt.Errorf("%s: %w", pipelineFile, err)
	}
	if len(raw) == 0 || len(raw)%recordSize != 0 {
		return nil, fmt.Errorf("%s: %d bytes, not a whole number of %d-byte samples", recordsFile, len(raw), recordSize)
	}
	f, err := symbols.Open(bin)
	if err != nil {
		return nil, err
	}
	funcs, err := f.Funcs("*")
	if err != nil {
		f.Close()
		return nil, err
	}
	byName := make(map[string]symbols.Func, len(funcs))
	for _, fn := range funcs {
		byName[fn.Name] = fn
	}
	errStale := errors.New("the example agent changed: record again with `go run ./internal/bench -record`")
	rebase := func(pc uint64) (uint64, error) {
		a, ok := meta.Addrs[pc]
		if !ok {
			return 0, fmt.Errorf("address %#x not in %s", pc, pipelineFile)
		}
		fn, ok := byName[a.Func]
		if !ok || fn.Entry+a.Offset >= fn.End {
			return 0, fmt.Errorf("%s+%#x: %w", a.Func, a.Offset, errStale)
		}
		return fn.Entry + a.Offset, nil
	}

	d := &pipelineData{Agent: bin, File: f, Stacks: map[int32][]uint64{}}
	for _, name := range meta.Probes {
		fn, ok := byName[name]
		if !ok {
			f.Close()
			return nil, fmt.Errorf("probe %s: %w", name, errStale)
		}
		d.Probes = append(d.Probes, probe.Probe{Func: fn})
	}
	for id, pcs := range meta.Stacks {
		out := make([]uint64, len(pcs))
		for i, pc := range pcs {
			if out[i], err = rebase(pc); err != nil {
				f.Close()
				return nil, err
			}
		}
		d.Stacks[id] = out
	}
	var rec probe.Record
	for off := 0; off < len(raw); off += recordSize {
		s := raw[off : off+recordSize]
		if err := probe.Decode(s, &rec); err != nil {
			f.Close()
			return nil, err
		}
		caller, err := rebase(rec.Caller)
		if err != nil {
			f.Close()
			return nil, err
		}
		binary.LittleEndian.PutUint64(s[56:], caller) // event.caller
		d.Samples = append(d.Samples, s)
	}
	return d, nil
}

// chBatchRows is how many rows go into one block: the export pipeline's
// default batch size.
const chBatchRows = 512

// A chEncoder does the exporter's CPU work for an INSERT without a
// server: the exporter's column fill (export.ClickHouseColumns), then the
// block's native encoding and LZ4 compression, as ch-go sends it.
type chEncoder struct {
	cols  *export.ClickHouseColumns
	buf   chproto.Buffer
	lz4   *compress.Writer
	Bytes int // compressed bytes produced
}

func newCHEncoder() *chEncoder {
	return &chEncoder{cols: export.NewClickHouseColumns(), lz4: compress.NewWriter(compress.LevelZero, compress.LZ4)}
}

// Append adds s to the batch; a full batch is encoded.
func (e *chEncoder) Append(s *export.Span) error {
	e.cols.Append(s)
	if e.cols.Rows() >= chBatchRows {
		return e.Flush()
	}
	return nil
}

// Flush encodes and compresses the block and starts a new one.
func (e *chEncoder) Flush() error {
	if e.cols.Rows() == 0 {
		return nil
	}
	in := e.cols.Input()
	e.buf.Reset()
	b := chproto.Block{Info: chproto.BlockInfo{BucketNum: -1}, Columns: len(in), Rows: e.cols.Rows()}
	if err := b.EncodeBlock(&e.buf, chproto.Version, in); err != nil {
		return err
	}
	if err := e.lz4.Compress(e.buf.Buf); err != nil {
		return err
	}
	e.Bytes += len(e.lz4.Data)
	e.cols.Reset()
	return nil
}

// A stage is where a pipeline run stops: each measures the stages before
// it too, so the differences are each stage's cost.
type stage int

const (
	stageDecode     stage = iota // ring-buffer sample -> probe.Record
	stageCall                    // -> calls.Call with symbolized stack (cached)
	stageSpan                    // -> export.Span
	stageClickHouse              // -> ClickHouse row in a block, encoded and LZ4-compressed per 512 rows
	nStages
)

var stageNames = [nStages]string{
	"decode sample",
	"+ build call, symbolize stack (cached)",
	"+ build span",
	"+ ClickHouse row, block encode, LZ4 (full pipeline)",
}

// A pipeline is every user-space stage a sample goes through.
type pipeline struct {
	data    *pipelineData
	upTo    stage
	builder calls.Builder
	spans   *export.SpanBuilder
	ch      *chEncoder
	rec     probe.Record
	sink    int // keeps the compiler from dropping stages whose result is unused
}

func newPipeline(d *pipelineData, upTo stage) (*pipeline, error) {
	p := &pipeline{
		data:  d,
		upTo:  upTo,
		spans: export.NewSpanBuilder(export.Resource{HostName: "node-1", PID: 4242, CiliumVersion: "1.18.0", GoVersion: runtime.Version()}),
		ch:    newCHEncoder(),
	}
	p.builder = calls.Builder{File: d.File, Probes: d.Probes, Stack: func(id int32) ([]uint64, error) {
		pcs, ok := d.Stacks[id]
		if !ok {
			return nil, fmt.Errorf("stack %d not recorded", id)
		}
		return pcs, nil
	}}
	return p, nil
}

// event takes sample i from ring-buffer bytes as far as p.upTo.
func (p *pipeline) event(i int) error {
	if err := probe.Decode(p.data.Samples[i%len(p.data.Samples)], &p.rec); err != nil {
		return err
	}
	if p.upTo == stageDecode {
		p.sink += p.rec.Probe
		return nil
	}
	c, err := p.builder.Build(&p.rec)
	if err != nil {
		return err
	}
	if p.upTo == stageCall {
		p.sink += len(c.Stack)
		return nil
	}
	s := p.spans.Build(c)
	if p.upTo == stageSpan {
		p.sink += len(s.Attributes)
		return nil
	}
	return p.ch.Append(&s)
}

// stageResult is one core's throughput up to a stage.
type stageResult struct {
	Name           string
	EventsPerSec   float64
	AllocsPerEvent float64
	BytesPerEvent  float64 // allocated
}

// pipelineResult is one core's throughput from samples to encoded blocks,
// stage by stage; the last stage is the whole pipeline.
type pipelineResult struct {
	Samples, Stacks int
	Stages          []stageResult
	WirePerEvent    float64 // compressed bytes sent per event
}

func (r pipelineResult) full() stageResult { return r.Stages[len(r.Stages)-1] }

// benchPipeline runs the pipeline up to each stage under testing.Benchmark
// with one processor: the reader of a tracer session runs on one
// goroutine. Quick runs every sample once instead.
func benchPipeline(d *pipelineData, quick bool) (pipelineResult, error) {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	out := pipelineResult{Samples: len(d.Samples), Stacks: len(d.Stacks)}
	for st := range nStages {
		p, err := newPipeline(d, st)
		if err != nil {
			return out, err
		}
		// One pass first: in a long-running session every stack and
		// address is symbolized once, then found in the caches.
		if err := p.events(len(d.Samples)); err != nil {
			return out, err
		}
		p.ch.Flush()
		var (
			res    testing.BenchmarkResult
			runErr error
		)
		if quick {
			res, runErr = measure(p, len(d.Samples))
		} else {
			res = testing.Benchmark(func(b *testing.B) {
				p.ch.Bytes = 0
				b.ReportAllocs()
				b.ResetTimer()
				if err := p.events(b.N); err != nil {
					runErr = err
				}
			})
		}
		if runErr != nil {
			return out, runErr
		}
		if err := p.ch.Flush(); err != nil {
			return out, err
		}
		if res.N == 0 {
			return out, errors.New("pipeline benchmark did not run")
		}
		out.Stages = append(out.Stages, stageResult{
			Name:           stageNames[st],
			EventsPerSec:   float64(res.N) / res.T.Seconds(),
			AllocsPerEvent: float64(res.MemAllocs) / float64(res.N),
			BytesPerEvent:  float64(res.MemBytes) / float64(res.N),
		})
		if st == stageClickHouse {
			out.WirePerEvent = float64(p.ch.Bytes) / float64(res.N)
		}
	}
	return out, nil
}

func (p *pipeline) events(n int) error {
	for i := range n {
		if err := p.event(i); err != nil {
			return err
		}
	}
	return nil
}

// measure runs n events once, as a benchmark result.
func measure(p *pipeline, n int) (testing.BenchmarkResult, error) {
	p.ch.Bytes = 0
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	allocs, bytes := ms.Mallocs, ms.TotalAlloc
	start := time.Now()
	err := p.events(n)
	t := time.Since(start)
	runtime.ReadMemStats(&ms)
	return testing.BenchmarkResult{N: n, T: t, MemAllocs: ms.Mallocs - allocs, MemBytes: ms.TotalAlloc - bytes}, err
}

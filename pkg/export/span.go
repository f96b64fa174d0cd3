package export

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// ScopeName is the instrumentation scope of every span.
const ScopeName = "github.com/cilium-tracer/tracer"

// DefaultServiceName is the service.name of spans when Resource.ServiceName
// is empty.
const DefaultServiceName = "cilium-agent"

// Span attribute keys set on every span besides the captured call attributes.
const (
	AttrFunction    = attribute.Key("code.function")
	AttrFile        = attribute.Key("code.filepath")
	AttrLine        = attribute.Key("code.lineno")
	AttrStacktrace  = attribute.Key("code.stacktrace")
	AttrGoroutine   = attribute.Key("goroutine.id")
	AttrSampleRate  = attribute.Key("tracer.sample_rate")
	AttrMinDuration = attribute.Key("tracer.min_duration_ns")
	// The error a call returned (calls.Error), as OpenTelemetry's
	// semantic conventions name it; its message is the span's status
	// message too.
	AttrErrorType    = attribute.Key("error.type")
	AttrErrorMessage = attribute.Key("error.message")
	// Where the call's time went (calls.Breakdown), for probes that
	// sample it: the sample count, the longest gap between samples, ns
	// per state, ns blocked per reason
	// (AttrBlockedPrefix + the reason, spaces as underscores, + "_ns"),
	// and the places it waited, the largest share first, one per line
	// as "STATE FUNC FILE:LINE SHARE".
	AttrBreakdownSamples  = attribute.Key("tracer.breakdown.samples")
	AttrBreakdownMaxGap   = attribute.Key("tracer.breakdown.max_gap_ns")
	AttrBreakdownCPU      = attribute.Key("tracer.breakdown.cpu_ns")
	AttrBreakdownRunnable = attribute.Key("tracer.breakdown.runnable_ns")
	AttrBreakdownSyscall  = attribute.Key("tracer.breakdown.syscall_ns")
	AttrBlockedPrefix     = "tracer.breakdown.blocked."
	AttrBreakdownWhere    = attribute.Key("tracer.breakdown.where")
	// The counts of a call's short system calls (calls.SyscallTotal):
	// AttrSyscallPrefix + the name, spaces as underscores, + ".count"
	// or ".ns".
	AttrSyscallPrefix = "tracer.syscall."
	// On the child spans of a call's system calls and child processes:
	// which it is ("syscall" or "process"), what the syscall returned,
	// a child's PID, and true on a child still running at the call's
	// end, where its span ends.
	AttrSpanKind       = attribute.Key("tracer.span")
	AttrSyscallRet     = attribute.Key("tracer.syscall.ret")
	AttrChildPID       = attribute.Key("process.pid")
	AttrProcessRunning = attribute.Key("tracer.process.running")
)

// Resource identifies the traced process. Empty fields are left out of the
// OpenTelemetry resource.
type Resource struct {
	ServiceName   string // service.name; DefaultServiceName when empty
	HostName      string // host.name
	ContainerID   string // container.id
	PID           int    // process.pid, as seen from the host
	Command       string // process.command
	CiliumVersion string // cilium.version
	GoVersion     string // process.runtime.version of the traced binary
}

// NodeName is host.name for spans: $NODE_NAME when set (a Kubernetes
// DaemonSet sets it from spec.nodeName, since its pods' hostname is the pod
// name), else the host name.
func NodeName() string {
	if n := os.Getenv("NODE_NAME"); n != "" {
		return n
	}
	n, _ := os.Hostname()
	return n
}

// Attributes returns the resource as OpenTelemetry attributes, in a stable
// order.
func (r Resource) Attributes() []attribute.KeyValue {
	name := r.ServiceName
	if name == "" {
		name = DefaultServiceName
	}
	kvs := []attribute.KeyValue{attribute.String("service.name", name)}
	add := func(k, v string) {
		if v != "" {
			kvs = append(kvs, attribute.String(k, v))
		}
	}
	add("host.name", r.HostName)
	add("container.id", r.ContainerID)
	if r.PID != 0 {
		kvs = append(kvs, attribute.Int("process.pid", r.PID))
	}
	add("process.command", r.Command)
	add("cilium.version", r.CiliumVersion)
	add("process.runtime.version", r.GoVersion)
	return kvs
}

// A Span is one call ready for export. It keeps the call it was built from
// for exporters that need the frames themselves (profiles, text).
type Span struct {
	TraceID      trace.TraceID
	SpanID       trace.SpanID
	ParentSpanID trace.SpanID // zero for the outermost call of a trace
	Name         string
	Kind         trace.SpanKind
	Start, End   time.Time

	StatusCode    codes.Code
	StatusMessage string

	Attributes []attribute.KeyValue
	Resource   *resource.Resource // shared by all spans of a builder, or of one process

	Call calls.Call
	// Children are the spans of the call's system calls and child
	// processes (calls.Call.Syscalls), whose parent it is. Their own
	// Call is empty.
	Children []Span
}

// A SpanBuilder turns calls into spans for one tracing session.
//
// Trace IDs are the session's random 8-byte prefix followed by the call's
// RootID in big-endian order: every call of one tree shares the trace ID
// without any buffering, and two tracer sessions never share trace IDs even
// if their call IDs meet. Span IDs are the call IDs in big-endian order.
type SpanBuilder struct {
	prefix   [8]byte
	base     Resource
	resource *resource.Resource

	mu sync.Mutex
	// processes are the resources of the processes added with
	// AddProcess, by PID; perProcess says there are any, without the lock.
	processes  map[int]*resource.Resource
	perProcess atomic.Bool
	// stacks renders each distinct stack once. calls.Builder gives the
	// calls of one stack the same frames, so the first frame's address
	// names the stack.
	stacks map[*symbols.Frame]string
}

// maxStacks bounds the rendered stacks kept; past it the cache starts over.
const maxStacks = 1 << 14

func (b *SpanBuilder) formatStack(frames []symbols.Frame) string {
	key := &frames[0]
	b.mu.Lock()
	defer b.mu.Unlock()
	if s, ok := b.stacks[key]; ok {
		return s
	}
	if b.stacks == nil || len(b.stacks) >= maxStacks {
		b.stacks = make(map[*symbols.Frame]string)
	}
	s := FormatStack(frames)
	b.stacks[key] = s
	return s
}

// NewSpanBuilder returns a builder whose spans carry res.
func NewSpanBuilder(res Resource) *SpanBuilder {
	b := &SpanBuilder{base: res, resource: resource.NewSchemaless(res.Attributes()...)}
	// crypto/rand.Read never returns an error since Go 1.24.
	rand.Read(b.prefix[:])
	return b
}

// Resource returns the resource attached to every span, but those of
// processes added with AddProcess.
func (b *SpanBuilder) Resource() *resource.Resource { return b.resource }

// maxProcesses bounds the processes a builder keeps a resource for; past
// it the map starts over, and the calls of the processes added before get
// the builder's resource.
const maxProcesses = 1 << 14

// AddProcess gives the calls of process pid a resource of their own: the
// builder's, with the process's PID, command and container. When every
// process running an executable is traced, each span names its process.
func (b *SpanBuilder) AddProcess(pid int, command, containerID string) {
	res := b.base
	res.PID, res.Command, res.ContainerID = pid, command, containerID
	r := resource.NewSchemaless(res.Attributes()...)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.processes == nil || len(b.processes) >= maxProcesses {
		b.processes = make(map[int]*resource.Resource)
	}
	b.processes[pid] = r
	b.perProcess.Store(true)
}

// resourceOf returns the resource of the calls of process pid.
func (b *SpanBuilder) resourceOf(pid int) *resource.Resource {
	if !b.perProcess.Load() {
		return b.resource
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if r, ok := b.processes[pid]; ok {
		return r
	}
	return b.resource
}

// TraceID returns the trace ID of the tree whose outermost call is rootID.
func (b *SpanBuilder) TraceID(rootID uint64) trace.TraceID {
	var id trace.TraceID
	copy(id[:8], b.prefix[:])
	binary.BigEndian.PutUint64(id[8:], rootID)
	return id
}

// Build returns the span of c.
func (b *SpanBuilder) Build(c calls.Call) Span {
	s := Span{
		TraceID:  b.TraceID(c.RootID),
		SpanID:   spanID(c.ID),
		Name:     calls.ShortName(c.Func),
		Kind:     trace.SpanKindInternal,
		Start:    c.Start,
		End:      c.Start.Add(c.Duration),
		Resource: b.resourceOf(c.PID),
		Call:     c,
	}
	if c.ParentID != 0 {
		s.ParentSpanID = spanID(c.ParentID)
	}
	if c.Unfinished {
		s.StatusCode = codes.Error
		s.StatusMessage = c.Reason
		if s.StatusMessage == "" {
			s.StatusMessage = "unfinished"
		}
	}
	if e := c.Error; e != nil {
		s.StatusCode = codes.Error
		s.StatusMessage = cmp.Or(e.Message, e.Type)
	}

	attrs := make([]attribute.KeyValue, 0, 7+len(c.Attrs))
	attrs = append(attrs, AttrFunction.String(c.Func))
	if len(c.Stack) > 0 {
		attrs = append(attrs,
			AttrFile.String(c.Stack[0].File),
			AttrLine.Int(c.Stack[0].Line),
			AttrStacktrace.String(b.formatStack(c.Stack)))
	}
	if c.Goroutine != 0 { // 0: unknown
		attrs = append(attrs, AttrGoroutine.Int64(int64(c.Goroutine)))
	}
	attrs = append(attrs,
		AttrSampleRate.Int64(int64(c.SampleRate)),
		AttrMinDuration.Int64(c.MinDuration.Nanoseconds()))
	for _, a := range c.Attrs {
		attrs = append(attrs, attribute.String(a.Key, a.Value))
	}
	if e := c.Error; e != nil {
		attrs = append(attrs, AttrErrorType.String(e.Type))
		if e.Message != "" {
			attrs = append(attrs, AttrErrorMessage.String(e.Message))
		}
	}
	if b := c.Breakdown; b != nil {
		attrs = append(attrs,
			AttrBreakdownSamples.Int(b.Samples),
			AttrBreakdownMaxGap.Int64(b.MaxGap.Nanoseconds()),
			AttrBreakdownCPU.Int64(b.CPU.Nanoseconds()),
			AttrBreakdownRunnable.Int64(b.Runnable.Nanoseconds()),
			AttrBreakdownSyscall.Int64(b.Syscall.Nanoseconds()))
		reasons := make([]string, 0, len(b.Blocked))
		for r := range b.Blocked {
			reasons = append(reasons, r)
		}
		slices.Sort(reasons)
		for _, r := range reasons {
			attrs = append(attrs, attribute.Int64(AttrBlockedPrefix+strings.ReplaceAll(r, " ", "_")+"_ns", b.Blocked[r].Nanoseconds()))
		}
		if top := b.Top(); len(top) > 0 {
			lines := make([]string, len(top))
			for i, p := range top {
				lines[i] = fmt.Sprintf("%s %s %s:%d %.3f", p.State, p.Func, p.File, p.Line, p.Share)
			}
			attrs = append(attrs, AttrBreakdownWhere.String(strings.Join(lines, "\n")))
		}
	}
	for _, t := range c.SyscallTotals {
		name := AttrSyscallPrefix + strings.ReplaceAll(t.Name, " ", "_")
		attrs = append(attrs, attribute.Int(name+".count", t.Count), attribute.Int64(name+".ns", t.Time.Nanoseconds()))
	}
	s.Attributes = attrs
	for i, sc := range c.Syscalls {
		s.Children = append(s.Children, b.syscallSpan(s, i, sc))
	}
	return s
}

// syscallSpan returns the span of system call or child process i of the
// call of span parent.
func (b *SpanBuilder) syscallSpan(parent Span, i int, sc calls.Syscall) Span {
	s := Span{
		TraceID:      parent.TraceID,
		SpanID:       spanID(mix(parent.Call.ID + uint64(i) + 1)),
		ParentSpanID: parent.SpanID,
		Name:         sc.Name,
		Kind:         trace.SpanKindInternal,
		Start:        sc.Start,
		End:          sc.Start.Add(sc.Duration),
		Resource:     parent.Resource,
	}
	if sc.Child {
		s.Attributes = []attribute.KeyValue{AttrSpanKind.String("process"), AttrChildPID.Int64(sc.Ret)}
		if sc.Running {
			s.Attributes = append(s.Attributes, AttrProcessRunning.Bool(true))
		}
		return s
	}
	s.Attributes = []attribute.KeyValue{AttrSpanKind.String("syscall"), AttrSyscallRet.Int64(sc.Ret)}
	if sc.Ret < 0 {
		s.StatusCode = codes.Error
		s.StatusMessage = syscall.Errno(-sc.Ret).Error()
	}
	return s
}

// mix is splitmix64's finalizer: the span IDs of a call's syscalls, from
// its ID, look as random as call IDs, so they meet no other span's.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// withChildren returns spans with the children of each after it: for
// exporters that send every span alike.
func withChildren(spans []Span) []Span {
	n := 0
	for i := range spans {
		n += len(spans[i].Children)
	}
	if n == 0 {
		return spans
	}
	out := make([]Span, 0, len(spans)+n)
	for i := range spans {
		out = append(out, spans[i])
		out = append(out, spans[i].Children...)
	}
	return out
}

func spanID(id uint64) trace.SpanID {
	var s trace.SpanID
	binary.BigEndian.PutUint64(s[:], id)
	return s
}

// FormatStack renders frames one per line, innermost first, as
// "func file:line"; frames inlined into the next one end in " (inlined)".
func FormatStack(frames []symbols.Frame) string {
	n := 0
	for _, f := range frames {
		n += len(f.Func) + len(f.File) + 24
	}
	b := make([]byte, 0, n)
	for i, f := range frames {
		if i > 0 {
			b = append(b, '\n')
		}
		b = append(b, f.Func...)
		b = append(b, ' ')
		b = append(b, f.File...)
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(f.Line), 10)
		if f.Inlined {
			b = append(b, " (inlined)"...)
		}
	}
	return string(b)
}

// Package groundtruth counts the calls of every function the tracer is
// expected to trace, and measures the duration of each call of some of
// them, so tests can compare the tracer's view with the program's own.
package groundtruth

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Counter counts the calls of one function and how many of them panicked.
type Counter struct {
	name   string
	calls  atomic.Uint64
	panics atomic.Uint64
}

var (
	mu       sync.Mutex
	counters []*Counter
)

// New registers a counter for the function whose fully qualified symbol
// name is name.
func New(name string) *Counter {
	c := &Counter{name: name}
	mu.Lock()
	counters = append(counters, c)
	mu.Unlock()
	return c
}

// Call records one call. Traced functions call it first thing, so a call
// that later panics is still counted.
func (c *Counter) Call() { c.calls.Add(1) }

// Panic records that the current call ends in a panic.
func (c *Counter) Panic() { c.panics.Add(1) }

// PanicAt records that call n of a measured function ends in a panic.
func (c *Counter) PanicAt(n uint64) {
	c.Panic()
	if measuring {
		slotOf(n).panicked.Store(true)
	}
}

// A measured function takes a sequence number from Next as its first
// argument after the receiver, so a tracer can capture it at entry (in the
// first integer argument register after the receiver's) and tests can find
// the agent's own measurement of that very call. Its first statement is
// Start(seq) and its last before returning is Stop(seq); the caller calls
// Next right before the call and Returned(seq) right after it. So each call
// is timed twice on the clock the tracer's probes read: the body, which the
// tracer's entry and RET probes enclose, and the call as the caller saw it,
// which encloses them. The two differ by the probes' traps, tens of
// microseconds, unless the thread was held up around the body: preempted
// on its way back from the entry probe's trap, or the goroutine rescheduled
// in the prologue.
//
// Each call has its own slot, reserved by Next before the call, so the
// others only read the clock and store into it.
const (
	chunkBits = 12
	maxChunks = 1 << 14
)

type slot struct {
	fn atomic.Pointer[Counter]
	// Clock readings, 0 when not read: before and after the call in the
	// caller, at the top and bottom of the body.
	called, returned, start, stop atomic.Int64
	panicked                      atomic.Bool
}

func slotOf(n uint64) *slot { return &chunks[n>>chunkBits].Load()[n&(1<<chunkBits-1)] }

var (
	measuring bool
	seq       atomic.Uint64
	chunks    [maxChunks]atomic.Pointer[[1 << chunkBits]slot]
	epoch     = time.Now()
)

// Measure turns the measurement of each call on; call it before the
// workload starts. Off, Start only counts and Stop does nothing, so a
// long-running agent keeps no per-call memory.
func Measure() { measuring = true }

// Next returns a sequence number, unique in the process, for one call of a
// measured function, and measuring, reads the clock last thing before the
// call.
func Next() uint64 {
	n := seq.Add(1)
	if !measuring {
		return n
	}
	i := n >> chunkBits
	if i >= maxChunks {
		panic(fmt.Sprintf("groundtruth: more than %d measured calls", maxChunks<<chunkBits))
	}
	if chunks[i].Load() == nil {
		chunks[i].CompareAndSwap(nil, new([1 << chunkBits]slot))
	}
	slotOf(n).called.Store(clock())
	return n
}

// Returned reads the clock first thing after call n returned to its caller.
func Returned(n uint64) {
	if measuring {
		slotOf(n).returned.Store(clock())
	}
}

// clock reads the monotonic clock, the one the tracer's probes read too;
// the +1 keeps 0 for a clock never read.
func clock() int64 { return int64(time.Since(epoch)) + 1 }

// Start counts a call of c's function and, measuring, reads the clock at
// the top of call n.
func (c *Counter) Start(n uint64) {
	now := clock()
	c.calls.Add(1)
	if measuring {
		s := slotOf(n)
		s.start.Store(now)
		s.fn.Store(c)
	}
}

// Stop reads the clock at the bottom of call n.
func (c *Counter) Stop(n uint64) {
	if measuring {
		slotOf(n).stop.Store(clock())
	}
}

// Report is the line the agent prints on SIGUSR1 and on exit.
type Report struct {
	// Counts maps each traced function's symbol name to its calls,
	// including calls that panicked.
	Counts map[string]uint64 `json:"counts"`
	// Panics maps each traced function's symbol name to the calls that
	// ended in a panic instead of returning.
	Panics   map[string]uint64 `json:"panics"`
	Checksum uint64            `json:"checksum"`
	// Durations maps each measured function's symbol name to the
	// durations of each of its calls that returned, by sequence number;
	// only with Measure.
	Durations map[string]map[uint64]Duration `json:"durations_ns,omitempty"`
	// LastSeq is the last sequence number handed out when the report was
	// taken, and Running lists those of the calls that had neither
	// returned nor panicked by then. The workload goes on while the report
	// is taken and printed, so a tracer may see these calls, and calls
	// numbered after LastSeq, return before the process exits.
	LastSeq uint64   `json:"last_seq,omitempty"`
	Running []uint64 `json:"running,omitempty"`
}

// Duration is one call's duration in ns twice: its body's, top to bottom,
// and the call's as its caller saw it.
type Duration [2]int64

// Snapshot reads every registered counter.
func Snapshot(checksum uint64) Report {
	r := Report{
		Counts:   make(map[string]uint64),
		Panics:   make(map[string]uint64),
		Checksum: checksum,
	}
	mu.Lock()
	defer mu.Unlock()
	for _, c := range counters {
		r.Counts[c.name] = c.calls.Load()
		r.Panics[c.name] = c.panics.Load()
	}
	if !measuring {
		return r
	}
	r.Durations = make(map[string]map[uint64]Duration)
	r.LastSeq = seq.Load()
	for n := uint64(1); n <= r.LastSeq; n++ {
		chunk := chunks[n>>chunkBits].Load()
		if chunk == nil {
			r.Running = append(r.Running, n) // Next is storing it
			continue
		}
		s := &chunk[n&(1<<chunkBits-1)]
		fn, returned := s.fn.Load(), s.returned.Load()
		if s.panicked.Load() {
			continue
		}
		if fn == nil || returned == 0 {
			r.Running = append(r.Running, n)
			continue
		}
		if r.Durations[fn.name] == nil {
			r.Durations[fn.name] = make(map[uint64]Duration)
		}
		r.Durations[fn.name][n] = Duration{s.stop.Load() - s.start.Load(), returned - s.called.Load()}
	}
	return r
}

// Names returns the symbol names of all registered counters, sorted.
func Names() []string {
	mu.Lock()
	defer mu.Unlock()
	names := make([]string, 0, len(counters))
	for _, c := range counters {
		names = append(names, c.name)
	}
	sort.Strings(names)
	return names
}

// JSON encodes the report as one line without a trailing newline.
func (r Report) JSON() []byte {
	// Maps of strings to integers always encode.
	b, _ := json.Marshal(r)
	return b
}

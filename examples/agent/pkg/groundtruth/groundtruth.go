// Package groundtruth counts the calls of every function the tracer is
// expected to trace, so tests can compare the tracer's view with the
// program's own.
package groundtruth

import (
	"encoding/json"
	"sort"
	"sync"
	"sync/atomic"
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

// Report is the line the agent prints on SIGUSR1 and on exit.
type Report struct {
	// Counts maps each traced function's symbol name to its calls,
	// including calls that panicked.
	Counts map[string]uint64 `json:"counts"`
	// Panics maps each traced function's symbol name to the calls that
	// ended in a panic instead of returning.
	Panics   map[string]uint64 `json:"panics"`
	Checksum uint64            `json:"checksum"`
}

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

// Package policymap holds the per-endpoint policy maps of the datapath.
package policymap

import (
	"sync"

	"github.com/cilium/cilium/pkg/groundtruth"
	"github.com/cilium/cilium/pkg/identity"
)

var dumpToSliceCalls = groundtruth.New("github.com/cilium/cilium/pkg/maps/policymap.(*PolicyMap).DumpToSlice")

// dumpDepth levels of walk precede DumpToSlice. They keep well inside a new
// goroutine's 2 KiB stack, and DumpToSlice's 64 KiB frame exceeds the whole
// stack, so DumpToSlice's own prologue always has to grow the stack: its
// entry runs twice for one call.
const dumpDepth = 16

// batchSize entries of 8 bytes: DumpToSlice's 64 KiB stack frame.
const batchSize = 8192

// PolicyEntry allows traffic from one peer identity.
type PolicyEntry struct {
	Identity identity.NumericIdentity
	Packets  uint64
}

// PolicyMap is the policy map of one endpoint.
type PolicyMap struct {
	mutex   sync.Mutex
	entries []PolicyEntry
}

// Dump reads the map on a new goroutine, so DumpToSlice starts on a small
// stack at the bottom of a walk.
func (pm *PolicyMap) Dump() []PolicyEntry {
	done := make(chan []PolicyEntry, 1)
	go func() { done <- pm.walk(dumpDepth) }()
	return <-done
}

//go:noinline
func (pm *PolicyMap) walk(depth int) []PolicyEntry {
	if depth == 0 {
		return pm.DumpToSlice()
	}
	return pm.walk(depth - 1)
}

// DumpToSlice copies the map's entries through a 64 KiB batch buffer on its
// stack, as a batched map lookup would.
//
//go:noinline
func (pm *PolicyMap) DumpToSlice() []PolicyEntry {
	dumpToSliceCalls.Call()
	var batch [batchSize]uint64
	pm.mutex.Lock()
	for i, e := range pm.entries {
		batch[i%batchSize] = uint64(e.Identity)<<32 | e.Packets&0xffffffff
	}
	out := make([]PolicyEntry, len(pm.entries))
	pm.mutex.Unlock()
	for i := range out {
		v := batch[i%batchSize]
		out[i] = PolicyEntry{Identity: identity.NumericIdentity(v >> 32), Packets: v & 0xffffffff}
	}
	return out
}

// Update replaces the map's entries.
func (pm *PolicyMap) Update(entries []PolicyEntry) {
	pm.mutex.Lock()
	defer pm.mutex.Unlock()
	pm.entries = append(pm.entries[:0], entries...)
}

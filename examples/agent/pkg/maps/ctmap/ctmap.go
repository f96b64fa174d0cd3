// Package ctmap is the connection tracking table.
package ctmap

import "github.com/cilium/cilium/pkg/groundtruth"

var lookupCalls = groundtruth.New("github.com/cilium/cilium/pkg/maps/ctmap.(*Map).lookup")

// Tuple identifies a connection.
type Tuple struct {
	SrcAddr, DstAddr uint32
	SrcPort, DstPort uint16
	Proto            uint8
}

type entry struct {
	packets uint64
	bytes   uint64
}

// Map is a fixed-size connection tracking table.
type Map struct {
	entries [256]entry
}

// NewMap returns a table with deterministic contents.
func NewMap() *Map {
	m := &Map{}
	for i := range m.entries {
		m.entries[i] = entry{packets: uint64(i) * 3, bytes: uint64(i) * 1500}
	}
	return m
}

// Scan looks up n synthetic connections and returns a checksum of the
// results: the hot loop of the overhead tests.
func (m *Map) Scan(n int) uint64 {
	var sum uint64
	for i := 0; i < n; i++ {
		t := Tuple{SrcAddr: 0x0a000000 | uint32(i), DstAddr: 0x0a000001, SrcPort: uint16(i), DstPort: 80, Proto: 6}
		sum = sum*1099511628211 + m.lookup(t)
	}
	return sum
}

// lookup is tiny on purpose: it measures the tracer's per-call overhead.
//
//go:noinline
func (m *Map) lookup(t Tuple) uint64 {
	lookupCalls.Call()
	h := (t.SrcAddr ^ t.DstAddr*31 ^ uint32(t.SrcPort)<<16 ^ uint32(t.DstPort) ^ uint32(t.Proto)) * 2654435761
	e := &m.entries[h>>24]
	return e.packets + e.bytes + uint64(h)
}

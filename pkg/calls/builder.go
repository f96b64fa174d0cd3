package calls

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/probe/syscalls"
	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
)

// A Builder turns records of the processes running one executable into
// calls.
type Builder struct {
	// File is the traced executable; Bias its load bias in the process
	// (runtime address - ELF address, 0 unless PIE).
	File *symbols.File
	Bias uint64
	// BiasOf, if set, gives each process's load bias in place of Bias:
	// processes load a PIE executable at addresses of their own. ok false
	// leaves that process's stacks as raw addresses.
	BiasOf func(pid int) (bias uint64, ok bool)
	// Probes are the attached probes, indexed by probe ID.
	Probes []probe.Probe
	// Stack returns the runtime addresses recorded under a stack ID;
	// nil leaves stacks out.
	Stack func(id int32) ([]uint64, error)
	// GoidUnknown is set when the probes were attached without the goid
	// offset: they then report g addresses, which are not goroutine IDs,
	// and calls say their goroutine is unknown.
	GoidUnknown bool

	clock      probe.Clock
	typeNames  map[uint64]string          // by ELF address
	hashNames  map[uint32]string          // by type hash, of the itabs; "": ambiguous
	frames     map[uint64][]symbols.Frame // by ELF address, adjusted for return addresses
	symbolized map[stackKey][]Frame       // each distinct stack once
}

// A stackKey names a recorded stack as symbolized: its ID, and the load
// bias its addresses were read with, since processes of one PIE
// executable share the stack table.
type stackKey struct {
	id    int32
	bias  uint64
	known bool // bias is known; else the addresses stay raw
}

// Build converts one record.
func (b *Builder) Build(r *probe.Record) (Call, error) {
	if r.Probe < 0 || r.Probe >= len(b.Probes) {
		return Call{}, fmt.Errorf("record for unknown probe %d", r.Probe)
	}
	p := b.Probes[r.Probe]
	c := Call{
		Func:        p.Func.Name,
		ProbeID:     uint32(r.Probe),
		ID:          r.ID,
		ParentID:    r.ParentID,
		RootID:      r.RootID,
		PID:         r.PID,
		Goroutine:   r.Goroutine,
		Start:       b.clock.Wall(r.Start),
		Duration:    time.Duration(r.End - r.Start),
		Depth:       r.Depth,
		SampleRate:  max(p.SampleEvery, 1),
		MinDuration: p.MinDuration,
	}
	if b.GoidUnknown {
		c.Goroutine = 0
	}
	if len(p.Captures) > 0 {
		c.Attrs = make([]Attr, 0, len(p.Captures))
		for i, capt := range p.Captures {
			if capt.Kind == args.KindError {
				continue // the call's Error
			}
			a := Attr{Key: capt.Name}
			if i < len(r.Values) {
				a.Value = FormatValue(capt, r.Values[i])
			}
			c.Attrs = append(c.Attrs, a)
		}
	}
	if r.Err != nil {
		c.Error = b.callError(r.PID, r.Err)
	}
	if r.Kind != probe.Returned {
		c.Unfinished = true
		c.Reason = r.Kind.String()
	}
	if b.Stack != nil && r.StackID >= 0 {
		st, err := b.StackFrames(r.PID, r.StackID)
		if err != nil {
			return c, err
		}
		// Shared by every call with this stack: read-only.
		c.Stack = st
	}
	return c, nil
}

// StackFrames returns the symbolized stack recorded under id in process
// pid, shared with the calls that have it: do not modify it.
func (b *Builder) StackFrames(pid int, id int32) ([]Frame, error) {
	k := stackKey{id: id, bias: b.Bias, known: true}
	if b.BiasOf != nil {
		k.bias, k.known = b.BiasOf(pid)
	}
	if st, ok := b.symbolized[k]; ok {
		return st, nil
	}
	// Stack IDs are stable (the table is never cleared while attached):
	// each is read and symbolized once.
	pcs, err := b.Stack(id)
	if err != nil {
		return nil, err
	}
	var st []Frame
	if k.known {
		st = b.SymbolizeWith(pcs, k.bias)
	} else {
		st = rawFrames(pcs)
	}
	if b.symbolized == nil {
		b.symbolized = make(map[stackKey][]Frame)
	}
	b.symbolized[k] = st
	return st, nil
}

// Symbolize turns a stack recorded at a function's entry into frames: the
// function's own PC first, then return addresses.
func (b *Builder) Symbolize(pcs []uint64) []Frame {
	return b.SymbolizeWith(pcs, b.Bias)
}

// SymbolizeWith is Symbolize for a process whose load bias is bias.
func (b *Builder) SymbolizeWith(pcs []uint64, bias uint64) []Frame {
	var out []Frame
	for i, pc := range pcs {
		out = append(out, b.frames1(pc, bias, i > 0)...)
	}
	return out
}

// rawFrames are the frames of a stack whose process's load bias is
// unknown: the addresses, unnamed.
func rawFrames(pcs []uint64) []Frame {
	out := make([]Frame, len(pcs))
	for i, pc := range pcs {
		out[i] = Frame{PC: pc, Func: fmt.Sprintf("?%#x", pc)}
	}
	return out
}

// Frame is re-exported so users of calls need not import symbols for it.
type Frame = symbols.Frame

func (b *Builder) frames1(pc, bias uint64, isReturn bool) []Frame {
	key := pc - bias
	if isReturn {
		// A return address points after the CALL; pc-1 is inside it,
		// with the call's line and inlining.
		key--
	}
	if fs, ok := b.frames[key]; ok {
		return fs
	}
	fs := b.File.Frames(key)
	if len(fs) == 0 {
		fs = []Frame{{PC: key, Func: fmt.Sprintf("?%#x", pc-bias)}}
	}
	if b.frames == nil {
		b.frames = make(map[uint64][]Frame)
	}
	b.frames[key] = fs
	return fs
}

// FormatValue renders a captured value: integers in decimal, pointers in
// hex, strings as text with "..." when truncated. A value that could not be
// read is empty.
func FormatValue(c args.Capture, v probe.Value) string {
	if !v.OK {
		return ""
	}
	if c.Kind == args.KindString {
		s := strings.ToValidUTF8(string(v.Data), "\uFFFD")
		if v.Len > uint64(len(v.Data)) {
			s += "..."
		}
		return s
	}
	var b [8]byte
	copy(b[:], v.Data)
	u := binary.LittleEndian.Uint64(b[:])
	if n := len(v.Data); n > 0 && n < 8 {
		u &= 1<<(8*n) - 1
	}
	switch c.Kind {
	case args.KindInt:
		shift := 64 - 8*min(max(len(v.Data), 1), 8)
		return strconv.FormatInt(int64(u<<shift)>>shift, 10)
	case args.KindBool:
		return strconv.FormatBool(u != 0)
	case args.KindPtr:
		return fmt.Sprintf("%#x", u)
	}
	return strconv.FormatUint(u, 10)
}

// Syscalls converts the system calls and child processes of one call, and
// the counts of its short system calls, the longest total first.
func (b *Builder) Syscalls(evs []syscalls.Event, totals []syscalls.Total) ([]Syscall, []SyscallTotal) {
	var out []Syscall
	for _, e := range evs {
		out = append(out, Syscall{Name: e.Name, Start: b.clock.Wall(e.Start), Duration: time.Duration(e.End - e.Start), Ret: e.Ret, Child: e.Child, Running: e.Running})
	}
	slices.SortStableFunc(out, func(x, y Syscall) int { return x.Start.Compare(y.Start) })
	var ts []SyscallTotal
	for _, t := range totals {
		ts = append(ts, SyscallTotal(t))
	}
	slices.SortStableFunc(ts, func(x, y SyscallTotal) int { return cmp.Or(cmp.Compare(y.Time, x.Time), cmp.Compare(x.Name, y.Name)) })
	return out, ts
}

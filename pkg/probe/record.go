package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/cilium-tracer/tracer/bpf/uprobes"
)

// Kind says how a call ended.
type Kind uint32

const (
	// Returned: the call returned through a RET.
	Returned Kind = iota
	// Unwound: the goroutine went on above the call without a RET seen (a
	// panic unwound it, runtime.Goexit ended the goroutine, or its RET
	// probes were detached while it ran).
	Unwound
	// Superseded: a new call started at the same depth after a panic or
	// Goexit on the goroutine, or after the probe was attached again, so
	// this one ended without a RET seen.
	Superseded
	// InFlight: the call had not returned when the probes were removed.
	InFlight
	// Expired: the call had not returned long after it started, and was
	// removed from the goroutine table (see Set.Expire).
	Expired
	// Tripped is no call: the breaker of the record's probe tripped (see
	// Config.BurstLimit). The probe's entries only count until it is
	// attached again.
	Tripped
	// Exited: the call was in flight when its process exited (see
	// Set.Exited).
	Exited
	// Entered is no call's end: a call of a probe with Config.Announce
	// started. Record.G is its goroutine's g, End is Start.
	Entered
)

func (k Kind) String() string {
	switch k {
	case Returned:
		return "returned"
	case Unwound:
		return "unwound without a return (panic or Goexit, or its probe was detached)"
	case Superseded:
		return "ended without a return (panic or Goexit, or its probe was detached)"
	case InFlight:
		return "in flight when tracing stopped"
	case Expired:
		return "no return for too long: goroutine gone, or still running"
	case Exited:
		return "its process exited"
	case Tripped:
		return "breaker tripped"
	case Entered:
		return "entered"
	}
	return fmt.Sprintf("kind(%d)", uint32(k))
}

// A Record is one call as the BPF programs saw it. Times are CLOCK_MONOTONIC
// nanoseconds; addresses are the target's runtime addresses.
type Record struct {
	ID, ParentID, RootID uint64
	Start, End           uint64
	Goroutine            uint64
	Depth                uint64
	Caller               uint64 // return address at entry: the immediate caller
	Probe                int
	StackID              int32 // -1: no stack
	Kind                 Kind
	PID                  int
	// G is, for Entered records, the address of the goroutine's runtime.g
	// in the target, where its state can be read while the call runs.
	G uint64
	// Values are the probe's captures, in the order of Probe.Captures:
	// read at entry, or for results at the RET; nil for probes without
	// captures.
	Values []Value
	// Err is the error the call returned, for probes with an error
	// result (args.KindError) that returned through a RET; nil: none.
	Err *ErrorValue
}

const recordSize = int(unsafe.Sizeof(uprobes.UprobesEvent{}))

// ErrClosed is returned by Read after Close.
var ErrClosed = errors.New("probe set closed")

// ErrInterrupted is returned by Read after Interrupt.
var ErrInterrupted = errors.New("read interrupted")

// Read blocks until the next record arrives, or the deadline set with
// SetDeadline passes (os.ErrDeadlineExceeded), or Interrupt is called
// (ErrInterrupted, once the records already waiting are read), or the set
// is closed.
func (s *Set) Read(r *Record) error {
	var raw ringbuf.Record
	if err := s.reader.ReadInto(&raw); err != nil {
		switch {
		case errors.Is(err, ringbuf.ErrClosed):
			return ErrClosed
		case errors.Is(err, ringbuf.ErrFlushed):
			return ErrInterrupted
		}
		return err
	}
	if err := decode(raw.RawSample, r); err != nil {
		return err
	}
	if len(raw.RawSample) >= recordSize+capValsSize && r.Probe >= 0 && r.Probe < len(s.probes) {
		captures := s.probes[r.Probe].Captures
		r.Values = decodeValuesBytes(raw.RawSample[recordSize:], len(captures))
		if len(raw.RawSample) >= retValsOff+retValsSize {
			r.Err = decodeReturns(raw.RawSample[retValsOff:], captures, r.Values)
		}
	}
	return nil
}

// Interrupt makes a Read blocked with no deadline return, from any
// goroutine.
func (s *Set) Interrupt() error { return s.reader.Flush() }

// SetDeadline makes Read return os.ErrDeadlineExceeded after t; the zero
// time blocks forever.
func (s *Set) SetDeadline(t time.Time) { s.reader.SetDeadline(t) }

func decode(b []byte, r *Record) error {
	if len(b) < recordSize {
		return fmt.Errorf("short record: %d bytes", len(b))
	}
	le := binary.LittleEndian
	*r = Record{
		ID:        le.Uint64(b[0:]),
		ParentID:  le.Uint64(b[8:]),
		RootID:    le.Uint64(b[16:]),
		Start:     le.Uint64(b[24:]),
		End:       le.Uint64(b[32:]),
		Goroutine: le.Uint64(b[40:]),
		Depth:     le.Uint64(b[48:]),
		Caller:    le.Uint64(b[56:]),
		Probe:     int(le.Uint32(b[64:])),
		StackID:   int32(le.Uint32(b[68:])),
		Kind:      Kind(le.Uint32(b[72:])),
		PID:       int(le.Uint32(b[76:])),
	}
	if r.Kind == Entered {
		// The programs put the g address in the end time's place.
		r.G, r.End = r.End, r.Start
	}
	return nil
}

// Stack returns the user stack recorded under id, innermost first, as
// runtime addresses.
func (s *Set) Stack(id int32) ([]uint64, error) {
	if id < 0 {
		return nil, nil
	}
	var pcs [64]uint64
	if err := s.objs.Stacks.Lookup(id, &pcs); err != nil {
		return nil, fmt.Errorf("stack %d: %w", id, err)
	}
	n := 0
	for n < len(pcs) && pcs[n] != 0 {
		n++
	}
	return append([]uint64(nil), pcs[:n]...), nil
}

// Drain removes every call still in flight from the goroutine table and
// returns them as InFlight records, ending now. Call it after detaching, so
// no probe adds to the table meanwhile.
func (s *Set) Drain() ([]Record, error) {
	return s.sweep(InFlight, func(uint64, *uprobes.UprobesGkey, *uprobes.UprobesGstate) bool { return true })
}

// Expire removes the goroutines whose every traced call in flight started
// more than maxAge ago, and returns those calls as Expired records. Their
// goroutine ended without a RET (runtime.Goexit, or a panic after which it
// never called a traced function again), or the calls run for longer than
// maxAge; either way the table does not keep them forever. It is safe while
// the probes are attached: a goroutine with any younger call is left alone.
func (s *Set) Expire(maxAge time.Duration) ([]Record, error) {
	return s.sweep(Expired, func(now uint64, _ *uprobes.UprobesGkey, gs *uprobes.UprobesGstate) bool {
		n := min(int(gs.N), len(gs.Frames))
		// The newest frame is the last: if it is young, so is the
		// goroutine's activity.
		return n == 0 || now-gs.Frames[n-1].StartNs >= uint64(maxAge)
	})
}

// Exited removes the goroutines of process pid, which has exited, and
// returns their calls in flight as Exited records. Their RETs never come,
// and a later process given the same PID must not pair with them.
func (s *Set) Exited(pid int) ([]Record, error) {
	return s.sweep(Exited, func(_ uint64, k *uprobes.UprobesGkey, _ *uprobes.UprobesGstate) bool { return int(k.Tgid) == pid })
}

// sweep removes the goroutines gone says are done with and returns their
// calls as records of kind.
func (s *Set) sweep(kind Kind, gone func(now uint64, k *uprobes.UprobesGkey, gs *uprobes.UprobesGstate) bool) ([]Record, error) {
	now, err := monotonicNow()
	if err != nil {
		return nil, err
	}
	var (
		key  uprobes.UprobesGkey
		gs   uprobes.UprobesGstate
		keys []uprobes.UprobesGkey
		recs []Record
	)
	it := s.objs.Gstates.Iterate()
	for it.Next(&key, &gs) {
		if gone(now, &key, &gs) {
			keys = append(keys, key)
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read goroutine table: %w", err)
	}
	// The probes go on meanwhile: each goroutine is reported as it is
	// when it leaves the table, so a call that returned since the scan is
	// not reported twice, and one that entered is not lost.
	for _, k := range keys {
		switch err := s.take(k, &gs); {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			continue // its last call returned
		case err != nil:
			return recs, fmt.Errorf("clear goroutine table: %w", err)
		}
		// A call entered since the scan: the goroutine goes back, unless
		// a probe has made it a new entry meanwhile.
		if !gone(now, &k, &gs) && s.objs.Gstates.Update(k, &gs, ebpf.UpdateNoExist) == nil {
			continue
		}
		recs = append(recs, s.records(k, &gs, now, kind)...)
	}
	return recs, nil
}

// take removes goroutine k from the table and returns its state as it was
// then.
func (s *Set) take(k uprobes.UprobesGkey, gs *uprobes.UprobesGstate) error {
	err := s.objs.Gstates.LookupAndDelete(k, gs)
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	// Hash maps cannot before Linux 5.14: a call that returns between
	// the lookup and the delete is reported twice.
	if err := s.objs.Gstates.Lookup(k, gs); err != nil {
		return err
	}
	return s.objs.Gstates.Delete(k)
}

// records returns the calls in flight on goroutine k, ending at now.
func (s *Set) records(k uprobes.UprobesGkey, gs *uprobes.UprobesGstate, now uint64, kind Kind) []Record {
	n := min(int(gs.N), len(gs.Frames))
	recs := make([]Record, 0, n)
	for i := 0; i < n; i++ {
		f := gs.Frames[i]
		r := Record{
			ID: f.Id, RootID: gs.Frames[0].Id,
			Start: f.StartNs, End: now,
			Goroutine: gs.Goid, Depth: f.Depth, Caller: f.Caller,
			Probe: int(f.ProbeId), StackID: f.StackId,
			Kind: kind, PID: int(k.Tgid),
		}
		if i > 0 {
			r.ParentID = gs.Frames[i-1].Id
		}
		if f.Captured != 0 && r.Probe < len(s.probes) {
			r.Values = s.takeValues(f.Id, len(s.probes[r.Probe].Captures))
		}
		recs = append(recs, r)
	}
	return recs
}

// GoroutineTableSize is how many goroutines can have traced calls in
// flight at once: the size of the goroutine table. An entry on a goroutine
// beyond it is counted untracked.
func (s *Set) GoroutineTableSize() int {
	return int(s.objs.Gstates.MaxEntries())
}

// Processes returns the PIDs of the processes with traced calls in flight.
func (s *Set) Processes() ([]int, error) {
	var (
		key  uprobes.UprobesGkey
		gs   uprobes.UprobesGstate
		seen = map[int]bool{}
		out  []int
	)
	it := s.objs.Gstates.Iterate()
	for it.Next(&key, &gs) {
		if pid := int(key.Tgid); !seen[pid] {
			seen[pid] = true
			out = append(out, pid)
		}
	}
	return out, it.Err()
}

// InFlight returns how many goroutines have traced calls in flight: the
// goroutine table's fill level.
func (s *Set) InFlight() (int, error) {
	var (
		key uprobes.UprobesGkey
		n   int
	)
	it := s.objs.Gstates.Iterate()
	var gs uprobes.UprobesGstate
	for it.Next(&key, &gs) {
		n++
	}
	return n, it.Err()
}

// Counters are the per-probe counts kept in BPF, summed over CPUs: see
// struct counters in bpf/uprobes/uprobes.c for each field.
type Counters uprobes.UprobesCounters

// Add returns the sum of c and o.
func (c Counters) Add(o Counters) Counters {
	c.Hits += o.Hits
	c.Returns += o.Returns
	c.Emitted += o.Emitted
	c.Dropped += o.Dropped
	c.Unfinished += o.Unfinished
	c.Skipped += o.Skipped
	c.Filtered += o.Filtered
	c.Reentered += o.Reentered
	c.Untracked += o.Untracked
	c.Contended += o.Contended
	c.Tripped += o.Tripped
	c.Shed += o.Shed
	c.Unstacked += o.Unstacked
	return c
}

// Counters returns the counters of every probe, indexed by probe ID.
func (s *Set) Counters() ([]Counters, error) {
	out := make([]Counters, len(s.probes))
	var perCPU []Counters
	for id := range s.probes {
		if err := s.objs.ProbeCounters.Lookup(uint32(id), &perCPU); err != nil {
			return nil, fmt.Errorf("counters of probe %d: %w", id, err)
		}
		for _, c := range perCPU {
			out[id] = out[id].Add(c)
		}
	}
	return out, nil
}

// EntryCount is how often an EntryOnly probe was hit with one stack.
type EntryCount struct {
	Probe   int
	StackID int32
	Count   uint64
}

// EntryCounts returns the counts of the EntryOnly probes.
func (s *Set) EntryCounts() ([]EntryCount, error) {
	var (
		key uprobes.UprobesEntryKey
		n   uint64
		out []EntryCount
	)
	it := s.objs.EntryCounts.Iterate()
	for it.Next(&key, &n) {
		out = append(out, EntryCount{Probe: int(key.ProbeId), StackID: key.StackId, Count: n})
	}
	return out, it.Err()
}

// takeValues removes and returns the values captured for call id; values
// lost to the LRU read as not OK.
func (s *Set) takeValues(id uint64, n int) []Value {
	var v uprobes.UprobesCaptureVals
	if err := s.objs.Captures.Lookup(id, &v); err != nil {
		return make([]Value, n)
	}
	s.objs.Captures.Delete(id)
	return decodeValues(&v, n)
}

package goroutine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/offsets"
	"github.com/cilium-tracer/tracer/pkg/symbols/procmaps"
)

// A State is one reading of a goroutine's runtime.g.
type State struct {
	G      uint64 // address of the runtime.g
	Goid   uint64
	Status Status
	// Scan is set while the garbage collector holds the goroutine to scan
	// its stack (the _Gscan bit); Status is the state it holds it in.
	Scan bool
	// WaitReason is why a Waiting goroutine waits; zero otherwise.
	WaitReason WaitReason
	// M is the address of the runtime.m (thread) the goroutine is on: set
	// while it runs or is in a system call, 0 otherwise.
	M uint64
	// PC, SP and BP are the registers the goroutine saved when it last
	// stopped running (runtime.g.sched): where it is parked, or, in a
	// system call, where it entered it. Stale while it runs.
	PC, SP, BP uint64
	// StackLo and StackHi bound the goroutine's stack: [StackLo, StackHi).
	StackLo, StackHi uint64
}

// ErrNotGoroutine is returned for an address that holds no goroutine: its
// status is none the runtime uses, or its stack bounds are inverted.
var ErrNotGoroutine = errors.New("no goroutine at this address")

// maxGSize bounds the head of runtime.g a Reader reads: the fields it needs
// lie in the first 200 bytes in every known Go release.
const maxGSize = 512

// A Reader reads the goroutines of one process. It keeps no state between
// reads and is safe for concurrent use.
type Reader struct {
	pid  int
	file *symbols.File
	// bias is the process's load bias: executable vaddr = runtime PC - bias.
	bias uint64
	g    offsets.G
	size int
	// syscallBP: entersyscall saves the frame pointer (Go 1.23+).
	syscallBP bool
	reasons   [256]WaitReason // by runtime.waitReason value (a uint8)
}

// NewReader returns a Reader of the goroutines of process pid, whose
// executable is f. The layout of runtime.g and the names of the wait
// reasons come from package offsets' tables, else from f itself, else from
// o, an offsets file made on an unstripped build of the same code (nil:
// none); NewReader fails when neither has them.
func NewReader(pid int, f *symbols.File, o *offsets.File) (*Reader, error) {
	bias, err := procmaps.Bias(f, pid)
	if err != nil {
		return nil, err
	}
	return newReader(pid, f, o, bias)
}

// newReader is NewReader with the load bias given.
func newReader(pid int, f *symbols.File, o *offsets.File, bias uint64) (*Reader, error) {
	g, err := offsets.GOffsetsFrom(f, o)
	if err != nil {
		return nil, err
	}
	if g.Size() > maxGSize {
		return nil, fmt.Errorf("runtime.g's fields span %d bytes, more than %d", g.Size(), maxGSize)
	}
	names, err := offsets.WaitReasonsFrom(f, o)
	if err != nil {
		return nil, err
	}
	minor, known := symbols.GoMinor(f.GoVersion)
	r := &Reader{pid: pid, file: f, bias: bias, g: g, size: int(g.Size()), syscallBP: !known || minor >= 23}
	for i := range r.reasons {
		if i < len(names) {
			r.reasons[i] = WaitReason{Name: names[i], Category: categories[names[i]]}
		} else {
			r.reasons[i] = WaitReason{Name: fmt.Sprintf("waitReason(%d)", i)}
		}
	}
	return r, nil
}

// Read reads the state of the goroutine whose runtime.g is at address g,
// in one read of the process's memory. A goroutine that has exited reads as
// Dead, or, once its g is reused, as another goroutine: compare Goid with
// the one expected. An address the process does not map, or a process that
// is gone, is an error.
func (r *Reader) Read(g uint64) (State, error) {
	var buf [maxGSize]byte
	b := buf[:r.size]
	if err := r.read(g, b); err != nil {
		return State{}, fmt.Errorf("read goroutine at %#x: %w", g, err)
	}
	u64 := func(off uint64) uint64 { return binary.LittleEndian.Uint64(b[off:]) }
	raw := binary.LittleEndian.Uint32(b[r.g.Status:])
	s := State{
		G:       g,
		Goid:    u64(r.g.Goid),
		Status:  Status(raw &^ gScan),
		Scan:    raw&gScan != 0,
		M:       u64(r.g.M),
		PC:      u64(r.g.SchedPC),
		SP:      u64(r.g.SchedSP),
		BP:      u64(r.g.SchedBP),
		StackLo: u64(r.g.StackLo),
		StackHi: u64(r.g.StackHi),
	}
	if !s.Status.known() || s.StackLo > s.StackHi {
		return State{}, fmt.Errorf("goroutine at %#x: status %#x, stack [%#x, %#x): %w", g, raw, s.StackLo, s.StackHi, ErrNotGoroutine)
	}
	if s.Status == Waiting {
		s.WaitReason = r.reasons[b[r.g.WaitReason]]
	}
	return s, nil
}

// read fills b from the process's memory at addr, wholly or not at all.
func (r *Reader) read(addr uint64, b []byte) error {
	n, err := r.readSome(addr, b)
	if err == nil && n < len(b) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// readSome reads up to len(b) bytes of the process's memory at addr: fewer
// when the range runs into an unmapped page.
func (r *Reader) readSome(addr uint64, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	local := [1]unix.Iovec{{Base: unsafe.SliceData(b)}}
	local[0].SetLen(len(b))
	remote := [1]unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}
	n, err := unix.ProcessVMReadv(r.pid, local[:], remote[:], 0)
	if err != nil {
		return 0, err
	}
	return n, nil
}

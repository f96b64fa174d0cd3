package goroutine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// maxDepth bounds the frame pointer walk, whatever the stack holds.
const maxDepth = 64

// stackWindow is how much of the stack one read fetches: a parked
// goroutine's runtime and sync frames take a few hundred bytes.
const stackWindow = 4096

// ErrNotParked is returned by Where for a goroutine whose saved registers
// do not say where it is: it is running, or dead.
var ErrNotParked = errors.New("goroutine is not parked")

// Where returns where the goroutine in state s waits: up to n frames of its
// stack, innermost first, from the first one outside the runtime and
// package sync (runtime, internal/runtime/..., sync, internal/sync,
// sync/atomic), found by walking the frame pointers from its saved
// registers. Go keeps frame pointers on amd64 and arm64, and a frame record
// there is the caller's frame pointer, then the return address. The walk
// takes at most 64 physical frames, each record higher on the stack than
// the last and inside [StackLo, StackHi), and stops at a return address
// outside Go code: a goroutine that runs again between Read and Where
// yields a short or stale answer, never a loop.
func (r *Reader) Where(s State, n int) ([]symbols.Frame, error) {
	switch s.Status {
	case Runnable, Syscall, Waiting, Preempted, Leaked:
	default:
		return nil, fmt.Errorf("goroutine at %#x is %v: %w", s.G, s.Status, ErrNotParked)
	}
	if n <= 0 {
		return nil, nil
	}
	w := walk{n: n, skipping: true}
	if !w.add(r.innermost(s.PC)) {
		return w.out, nil
	}
	st := stackReader{r: r, hi: s.StackHi}
	fp := s.BP
	if s.Status == Syscall && !r.syscallBP {
		var err error
		if fp, err = r.syscallFP(&st, s, &w); err != nil || fp == 0 {
			return w.out, err
		}
	}
	for prev := uint64(0); fp != 0; {
		if fp <= prev || fp%8 != 0 || fp < s.StackLo || fp >= s.StackHi || s.StackHi-fp < 16 {
			break
		}
		rec, err := st.at(fp, 16)
		if err != nil {
			return w.out, err
		}
		ret := binary.LittleEndian.Uint64(rec[8:])
		if ret == 0 || !w.add(r.returnFrames(ret)) {
			break
		}
		prev, fp = fp, binary.LittleEndian.Uint64(rec)
	}
	return w.out, nil
}

// A walk collects the frames Where returns.
type walk struct {
	n        int
	out      []symbols.Frame
	skipping bool // still in the runtime's and sync's frames
	depth    int  // physical frames walked
}

// add takes the frames of the next physical frame, innermost first. It
// reports whether the walk goes on: the frames are of Go code, fewer than n
// frames are held, and fewer than maxDepth physical frames were walked.
func (w *walk) add(frames []symbols.Frame) bool {
	w.depth++
	for _, f := range frames {
		if w.skipping && runtimeOrSync(f.Func) {
			continue
		}
		w.skipping = false
		w.out = append(w.out, f)
		if len(w.out) == w.n {
			return false
		}
	}
	return len(frames) > 0 && w.depth < maxDepth
}

// returnFrames symbolizes a return address. It points after the CALL: the
// call's line and inlining are at the byte before. It is nil outside Go
// code.
func (r *Reader) returnFrames(ret uint64) []symbols.Frame {
	return r.file.Frames(ret - 1 - r.bias)
}

// syscallFP returns the frame pointer of the function that entered the
// system call the goroutine in state s is in, for Go releases before 1.23,
// whose entersyscall saved no frame pointer: the function's frame, as the
// pcsp table gives its size at the saved PC, holds it, on amd64 just under
// the return address, on arm64 just under the stack pointer. Functions
// without a frame, assembly such as Go 1.18's syscall.Syscall on amd64,
// are stepped over by their return address at the stack pointer, and their
// callers' frames go to w. It is 0 when the walk ends there.
func (r *Reader) syscallFP(st *stackReader, s State, w *walk) (uint64, error) {
	pc, sp := s.PC, s.SP
	for {
		d, ok := r.file.SPDelta(pc - 1 - r.bias)
		switch {
		case !ok || d < 0:
			return 0, nil
		case d > 0 && r.file.Arch == "arm64":
			return sp - 8, nil
		case d > 0:
			return sp + uint64(d) - 8, nil
		case r.file.Arch == "arm64":
			// A function without a frame keeps its return address in
			// the link register, which the goroutine did not save.
			return 0, nil
		}
		if sp < s.StackLo || sp >= s.StackHi || s.StackHi-sp < 8 {
			return 0, nil
		}
		b, err := st.at(sp, 8)
		if err != nil {
			return 0, err
		}
		pc, sp = binary.LittleEndian.Uint64(b), sp+8
		if !w.add(r.returnFrames(pc)) {
			return 0, nil
		}
	}
}

// innermost symbolizes the saved PC. It is the return address of a call
// into the scheduler, mcall's or entersyscall's, except in a goroutine
// that has not run yet, where it is its function's entry: as the runtime's
// traceback does, the byte before stands for the call unless it lies in
// another function.
func (r *Reader) innermost(pc uint64) []symbols.Frame {
	at := r.file.Frames(pc - r.bias)
	before := r.file.Frames(pc - 1 - r.bias)
	if len(before) == 0 || len(at) == 0 || before[len(before)-1].Func != at[len(at)-1].Func {
		return at
	}
	return before
}

// runtimeOrSync reports whether the function named fn belongs to the
// runtime or to package sync, whose frames a parked goroutine's stack
// starts with.
func runtimeOrSync(fn string) bool {
	switch pkg := funcPackage(fn); pkg {
	case "runtime", "sync", "internal/sync", "sync/atomic":
		return true
	default:
		return strings.HasPrefix(pkg, "runtime/internal/") || strings.HasPrefix(pkg, "internal/runtime/")
	}
}

// funcPackage returns the import path of the package of the function named
// fn, e.g. "internal/sync" for "internal/sync.(*Mutex).lockSlow". Type
// arguments, which may hold paths of their own, do not count.
func funcPackage(fn string) string {
	if i := strings.IndexByte(fn, '['); i >= 0 {
		fn = fn[:i]
	}
	slash := strings.LastIndexByte(fn, '/')
	dot := strings.IndexByte(fn[slash+1:], '.')
	if dot < 0 {
		return fn
	}
	return fn[:slash+1+dot]
}

// A stackReader reads frame records from a goroutine's stack, a window at a
// time.
type stackReader struct {
	r    *Reader
	hi   uint64 // the stack's top: reads stop there
	base uint64 // address of buf[0]
	n    int    // bytes held
	buf  [stackWindow]byte
}

// at returns the n bytes at addr, which lie below hi.
func (s *stackReader) at(addr, n uint64) ([]byte, error) {
	if s.n == 0 || addr < s.base || addr+n > s.base+uint64(s.n) {
		end := min(s.hi, addr+stackWindow)
		got, err := s.r.readSome(addr, s.buf[:end-addr])
		if err != nil {
			return nil, fmt.Errorf("read stack at %#x: %w", addr, err)
		}
		if uint64(got) < n {
			return nil, fmt.Errorf("read stack at %#x: %d bytes", addr, got)
		}
		s.base, s.n = addr, got
	}
	return s.buf[addr-s.base : addr-s.base+n], nil
}

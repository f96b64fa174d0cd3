package probe

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/cilium-tracer/tracer/bpf/uprobes"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
)

// MaxCaptures is how many values one probe can capture. A function's error
// result (args.KindError) takes none of them: the RET reads it from the
// result registers (ret_vals), not into a capture's slot.
const MaxCaptures = 4

// Values returns how many of the MaxCaptures the captures take: all but
// the error result.
func Values(captures []args.Capture) int {
	n := 0
	for _, c := range captures {
		if c.Kind != args.KindError {
			n++
		}
	}
	return n
}

// CaptureBytes bounds the bytes of a captured string.
const CaptureBytes = 64

// Integer argument registers the BPF programs can read, per GOARCH.
var argRegs = map[string]int{"amd64": 9, "arm64": 16}

// A Value is one captured value as read at the call's entry.
type Value struct {
	// OK is false when the read faulted or the value was lost: the
	// attribute is then empty.
	OK bool
	// Data holds a scalar's bytes, little-endian, or a string's first
	// CaptureBytes bytes.
	Data []byte
	// Len is a string's full length; Data is truncated when Len is
	// larger.
	Len uint64
}

// ErrorBytes bounds the bytes of each string an error's message is made of.
const ErrorBytes = 128

// An ErrorValue is the non-nil error a call returned, as read at its RET.
type ErrorValue struct {
	// Type is the runtime address of the dynamic type's descriptor
	// (runtime._type); 0 when the itab could not be read.
	Type uint64
	// Hash is the type's hash, from the itab: the same in every process.
	Hash uint32
	// Kind is the layout the message was read by (Options.ErrorTypes);
	// 0: the message could not be read, only the type is known.
	Kind args.ErrorKind
	// Parts are the strings the layout names, then the wrapped error's
	// string, truncated to ErrorBytes (Value.Len is the full length).
	Parts [3]Value
	// InnerType and InnerKind are the wrapped error's, if the layout has
	// one; Word is the outer value's word, else the wrapped one's.
	InnerType uint64
	InnerKind args.ErrorKind
	Word      uint64
}

const (
	capValsSize = int(unsafe.Sizeof(uprobes.UprobesCaptureVals{}))
	retValsSize = int(unsafe.Sizeof(uprobes.UprobesRetVals{}))
	// retValsOff is where a ret_vals starts in an event_returns: after
	// the event and the capture_vals, aligned for its words.
	retValsOff = (recordSize + capValsSize + 7) &^ 7
)

// Probe flags and capture flags of bpf/uprobes/uprobes.c.
const (
	flagEntryOnly     = 1
	flagPushesBP      = 2
	flagAnnounce      = 4
	flagError         = 8
	flagReturns       = 16
	flagEntryCaptures = 32
	captureInReg      = 1
	captureDeref      = 2
	captureAtReturn   = 4
	captureKindScalar = 1
	captureKindString = 2
)

func captureSpec(c args.Capture) uprobes.UprobesCaptureSpec {
	s := uprobes.UprobesCaptureSpec{
		Reg:         uint8(c.Reg),
		Kind:        captureKindScalar,
		Size:        uint8(c.Size),
		Offset:      int32(c.Offset),
		DerefOffset: int32(c.DerefOffset),
	}
	if c.Kind == args.KindString {
		s.Kind = captureKindString
	}
	if c.InReg {
		s.Flags |= captureInReg
	}
	if c.Deref {
		s.Flags |= captureDeref
	}
	if c.AtReturn {
		s.Flags |= captureAtReturn
	}
	return s
}

// checkCaptures refuses what the BPF programs cannot read.
func checkCaptures(p Probe, arch string) error {
	if n := Values(p.Captures); n > MaxCaptures {
		return fmt.Errorf("%s: %d captures, at most %d", p.Func.Name, n, MaxCaptures)
	}
	if len(p.Captures) > 0 && p.EntryOnly {
		return fmt.Errorf("%s: captures need paired calls, not entry-only mode", p.Func.Name)
	}
	n, ok := argRegs[arch]
	if !ok && len(p.Captures) > 0 {
		return fmt.Errorf("%s: captures on %s are not supported", p.Func.Name, arch)
	}
	for i, c := range p.Captures {
		// Last, so the values' slots are the captures' positions.
		if c.Kind == args.KindError && i != len(p.Captures)-1 {
			return fmt.Errorf("%s: error result %s is not the last capture", p.Func.Name, c.Name)
		}
		if err := c.Validate(); err != nil {
			return fmt.Errorf("%s: %w", p.Func.Name, err)
		}
		last := c.Reg
		if c.InReg && (c.Kind == args.KindString || c.Kind == args.KindError) {
			last++
		}
		if last >= n {
			return fmt.Errorf("%s: capture %s: register %d, %s has %d argument registers", p.Func.Name, c.Name, last, arch, n)
		}
	}
	return nil
}

func decodeValues(v *uprobes.UprobesCaptureVals, n int) []Value {
	out := make([]Value, min(n, MaxCaptures))
	for i := range out {
		if v.Ok&(1<<i) == 0 {
			continue
		}
		l := uint64(v.Len[i])
		data := v.Data[i][:min(l, CaptureBytes)]
		out[i] = Value{OK: true, Data: append([]byte(nil), data...), Len: l}
	}
	return out
}

// decodeReturns puts the results in ret_vals b into vals, at the
// positions of the probe's captures of results, and returns the error.
func decodeReturns(b []byte, captures []args.Capture, vals []Value) *ErrorValue {
	le := binary.LittleEndian
	var ev *ErrorValue
	for i, c := range captures {
		switch {
		case c.Kind == args.KindError:
			ev = decodeError(b[8*16:])
		case i >= len(vals):
		case c.AtReturn:
			data := le.AppendUint64(nil, le.Uint64(b[8*(c.Reg&15):]))
			vals[i] = Value{OK: true, Data: data[:c.Size], Len: uint64(c.Size)}
		}
	}
	return ev
}

// decodeError decodes an err_vals; nil for a nil error.
func decodeError(b []byte) *ErrorValue {
	le := binary.LittleEndian
	if le.Uint64(b) == 0 {
		return nil
	}
	e := &ErrorValue{
		Type:      le.Uint64(b[8:]),
		Hash:      le.Uint32(b[16:]),
		Kind:      args.ErrorKind(le.Uint32(b[20:])),
		InnerType: le.Uint64(b[24:]),
		InnerKind: args.ErrorKind(le.Uint32(b[32:])),
		Word:      le.Uint64(b[40:]),
	}
	for k := range e.Parts {
		l := uint64(le.Uint32(b[48+4*k:]))
		if l == 0 {
			continue
		}
		data := b[64+ErrorBytes*k:][:min(l, ErrorBytes)]
		e.Parts[k] = Value{OK: true, Data: append([]byte(nil), data...), Len: l}
	}
	return e
}

func decodeValuesBytes(b []byte, n int) []Value {
	var v uprobes.UprobesCaptureVals
	le := binary.LittleEndian
	v.Ok = le.Uint32(b)
	for i := range v.Len {
		v.Len[i] = le.Uint32(b[4+4*i:])
	}
	for i := range v.Data {
		copy(v.Data[i][:], b[4+4*MaxCaptures+CaptureBytes*i:])
	}
	return decodeValues(&v, n)
}

package probe

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/cilium-tracer/tracer/bpf/uprobes"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
)

// MaxCaptures is how many values one probe can capture.
const MaxCaptures = 4

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

const capValsSize = int(unsafe.Sizeof(uprobes.UprobesCaptureVals{}))

func captureSpec(c args.Capture) uprobes.UprobesCaptureSpec {
	s := uprobes.UprobesCaptureSpec{
		Reg:         uint8(c.Reg),
		Kind:        1, // CAPTURE_SCALAR
		Size:        uint8(c.Size),
		Offset:      int32(c.Offset),
		DerefOffset: int32(c.DerefOffset),
	}
	if c.Kind == args.KindString {
		s.Kind = 2 // CAPTURE_STRING
	}
	if c.InReg {
		s.Flags |= 1 // CAPTURE_IN_REG
	}
	if c.Deref {
		s.Flags |= 2 // CAPTURE_DEREF
	}
	return s
}

// checkCaptures refuses what the BPF programs cannot read.
func checkCaptures(p Probe, arch string) error {
	if len(p.Captures) > MaxCaptures {
		return fmt.Errorf("%s: %d captures, at most %d", p.Func.Name, len(p.Captures), MaxCaptures)
	}
	if len(p.Captures) > 0 && p.EntryOnly {
		return fmt.Errorf("%s: captures need paired calls, not entry-only mode", p.Func.Name)
	}
	n, ok := argRegs[arch]
	if !ok && len(p.Captures) > 0 {
		return fmt.Errorf("%s: captures on %s are not supported", p.Func.Name, arch)
	}
	for _, c := range p.Captures {
		if err := c.Validate(); err != nil {
			return fmt.Errorf("%s: %w", p.Func.Name, err)
		}
		last := c.Reg
		if c.InReg && c.Kind == args.KindString {
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

package disasm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/arch/arm64/arm64asm"
	"golang.org/x/arch/x86/x86asm"
)

// A DecodeError reports an instruction that could not be decoded in a
// function body. Probes are only placed when the whole body decodes: one
// placed off an instruction boundary would corrupt the target.
type DecodeError struct {
	Func   string
	Offset uint64 // file offset of the undecodable bytes
	Bytes  []byte // up to 16 bytes starting there
	Err    error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("%s: cannot decode instruction at file offset %#x (% x): %v", e.Func, e.Offset, e.Bytes, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

var endbr64 = []byte{0xf3, 0x0f, 0x1e, 0xfa}

// A Body is what decoding a function's instructions found.
type Body struct {
	Start uint64   // file offset of the entry
	Size  uint64   // bytes covered: the function's bounds
	Rets  []uint64 // file offsets of the RETs
	// Branches are the direct jumps and calls whose target is outside
	// the body.
	Branches []Branch
	// Check is the function's stack-bound check, if it has one.
	Check *StackCheck
	// starts has a bit set for each offset from the entry where an
	// instruction starts, and for Size; nil on arm64, where every
	// instruction is 4 bytes.
	starts []uint64
}

// A Branch is a direct jump or call.
type Branch struct {
	Target uint64 // virtual address
	Call   bool
}

// A StackCheck is the prologue of a Go function that compares the stack
// pointer with g.stackguard0 and, when the stack is short or a preemption is
// requested, branches to a block that calls runtime.morestack and jumps back
// to the entry. A call can thus pass its entry several times, but the
// instruction after the check once.
type StackCheck struct {
	End    uint64 // file offset of the first instruction after the check
	Callee uint64 // virtual address the check's block calls: runtime.morestack*
}

// Boundary reports whether off bytes from the entry is an instruction
// boundary.
func (b *Body) Boundary(off uint64) bool {
	if off > b.Size {
		return false
	}
	if b.starts == nil {
		return off%4 == 0
	}
	return b.starts[off/64]&(1<<(off%64)) != 0
}

// Decode disassembles code, the body of the function name for arch
// ("amd64" or "arm64"), found at virtual address entry and file offset
// start. Any instruction that fails to decode makes it a *DecodeError.
func Decode(arch, name string, entry, start uint64, code []byte) (*Body, error) {
	decodeErr := func(i int, err error) error {
		return &DecodeError{Func: name, Offset: start + uint64(i), Bytes: bytes.Clone(code[i:min(i+16, len(code))]), Err: err}
	}
	b := &Body{Start: start, Size: uint64(len(code))}
	end := entry + uint64(len(code))
	out := func(target uint64, call bool) {
		if target < entry || target >= end {
			b.Branches = append(b.Branches, Branch{Target: target, Call: call})
		}
	}
	switch arch {
	case "amd64":
		b.starts = make([]uint64, len(code)/64+1)
		for i := 0; i < len(code); {
			b.starts[i/64] |= 1 << (i % 64)
			// x86asm does not know ENDBR64 (emitted with GOAMD64 and
			// CET-enabled C code in cgo binaries).
			if bytes.HasPrefix(code[i:], endbr64) {
				i += len(endbr64)
				continue
			}
			if isVEX(code[i:]) {
				return nil, decodeErr(i, errVEX)
			}
			inst, err := x86asm.Decode(code[i:], 64)
			if err == nil && inst.Len <= 0 {
				err = fmt.Errorf("zero-length instruction")
			}
			if err != nil {
				return nil, decodeErr(i, err)
			}
			switch inst.Op {
			case x86asm.RET:
				b.Rets = append(b.Rets, start+uint64(i))
			case x86asm.JMP, x86asm.CALL:
				if rel, ok := inst.Args[0].(x86asm.Rel); ok {
					out(entry+uint64(i+inst.Len)+uint64(int64(rel)), inst.Op == x86asm.CALL)
				}
			}
			i += inst.Len
		}
		b.starts[len(code)/64] |= 1 << (len(code) % 64)
		b.Check = stackCheck(entry, start, code, decodeAMD64)
	case "arm64":
		// The arm64 assembler pads function bodies to 16 bytes with zero
		// words, which are included in the symbol size and the pc tables; a
		// zero word is never an instruction Go emits.
		for len(code) >= 4 && bytes.Equal(code[len(code)-4:], []byte{0, 0, 0, 0}) {
			code = code[:len(code)-4]
		}
		if len(code)%4 != 0 {
			return nil, decodeErr(len(code)&^3, fmt.Errorf("body size %d is not a multiple of 4", len(code)))
		}
		for i := 0; i < len(code); i += 4 {
			inst, err := arm64asm.Decode(code[i:])
			if err != nil && arm64Known(binary.LittleEndian.Uint32(code[i:])) {
				continue
			}
			if err != nil {
				return nil, decodeErr(i, err)
			}
			switch inst.Op {
			case arm64asm.RET:
				b.Rets = append(b.Rets, start+uint64(i))
			case arm64asm.B, arm64asm.BL:
				if rel, ok := inst.Args[0].(arm64asm.PCRel); ok {
					out(entry+uint64(i)+uint64(int64(rel)), inst.Op == arm64asm.BL)
				}
			}
		}
		b.Check = stackCheck(entry, start, code, decodeARM64)
	default:
		return nil, fmt.Errorf("%s: return offsets are not supported on %s", name, arch)
	}
	return b, nil
}

// An inst is what stackCheck needs of one instruction.
type inst struct {
	len    int
	kind   instKind
	target uint64 // of a direct branch, relative to the instruction
}

type instKind int

const (
	other instKind = iota
	condJump
	jump
	call
	stop // RET, indirect branch, or anything that ends a prologue scan
)

// maxPrologue bounds the instructions before a stack check's branch: at
// most six in the largest-frame form on amd64 (ENDBR64, MOVQ SP, SUBQ,
// JB, CMPQ, JBE); maxSpills bounds its block's argument spills, calls and
// reloads (Go's register ABI has 9 integer and 15 float argument
// registers).
const (
	maxPrologue = 8
	maxSpills   = 64
)

// stackCheck finds the stack-bound check at the start of a decoded body:
// the last of its first conditional branches whose target block calls a
// function and jumps back to the entry. Its callee is checked by the
// caller, which knows the names of functions.
func stackCheck(entry, start uint64, code []byte, dec func([]byte) inst) *StackCheck {
	var c *StackCheck
	off := 0
	for n := 0; n < maxPrologue && off < len(code); n++ {
		in := dec(code[off:])
		if in.len == 0 {
			return c
		}
		switch in.kind {
		case condJump:
			t := uint64(off) + in.target
			if callee, ok := morestackBlock(entry, t, code, dec); ok {
				c = &StackCheck{End: start + uint64(off+in.len), Callee: callee}
			}
		case jump, call, stop:
			return c
		}
		off += in.len
	}
	return c
}

// morestackBlock reports whether the block at offset t spills, calls one
// function, reloads and jumps back to the entry, and what it calls.
func morestackBlock(entry, t uint64, code []byte, dec func([]byte) inst) (callee uint64, ok bool) {
	off := t
	called := false
	for n := 0; n < maxSpills && off < uint64(len(code)); n++ {
		in := dec(code[off:])
		switch in.kind {
		case call:
			if called {
				return 0, false
			}
			callee, called = entry+off+in.target, true
		case jump:
			return callee, called && off+in.target == 0
		case condJump, stop:
			return 0, false
		}
		if in.len == 0 {
			return 0, false
		}
		off += uint64(in.len)
	}
	return 0, false
}

// decodeAMD64 and decodeARM64 classify one instruction for stackCheck; a
// zero len means it does not decode. Branch targets of the rel forms are
// relative to the instruction's start.
func decodeAMD64(code []byte) inst {
	if bytes.HasPrefix(code, endbr64) {
		return inst{len: len(endbr64)}
	}
	in, err := x86asm.Decode(code, 64)
	if err != nil || in.Len <= 0 {
		return inst{}
	}
	out := inst{len: in.Len}
	rel, isRel := in.Args[0].(x86asm.Rel)
	switch {
	case in.Op == x86asm.JMP && isRel:
		out.kind = jump
	case in.Op == x86asm.CALL && isRel:
		out.kind = call
	case in.Op == x86asm.JMP, in.Op == x86asm.CALL, in.Op == x86asm.RET:
		out.kind = stop
	case isRel:
		out.kind = condJump
	}
	if isRel {
		out.target = uint64(in.Len) + uint64(int64(rel))
	}
	return out
}

func decodeARM64(code []byte) inst {
	in, err := arm64asm.Decode(code)
	if err != nil {
		if len(code) >= 4 && arm64Known(binary.LittleEndian.Uint32(code)) {
			return inst{len: 4}
		}
		return inst{}
	}
	out := inst{len: 4}
	switch in.Op {
	case arm64asm.B, arm64asm.BL:
		if rel, ok := in.Args[0].(arm64asm.PCRel); ok {
			out.kind, out.target = jump, uint64(int64(rel))
			if in.Op == arm64asm.BL {
				out.kind = call
			}
		} else if rel, ok := in.Args[1].(arm64asm.PCRel); ok {
			out.kind, out.target = condJump, uint64(int64(rel))
		}
	case arm64asm.CBZ, arm64asm.CBNZ, arm64asm.TBZ, arm64asm.TBNZ:
		out.kind = condJump // never a stack check, but a branch
	case arm64asm.RET, arm64asm.BR, arm64asm.BLR:
		out.kind = stop
	}
	return out
}

// errVEX refuses VEX and EVEX (AVX) instructions: x86asm decodes some of
// them with a wrong length (VZEROUPPER as four bytes in x/arch v0.33), which
// would put every later probe off an instruction boundary. Go only emits them
// in assembly and with GOAMD64=v3 or later.
var errVEX = errors.New("VEX/EVEX-encoded instruction (not reliably decodable)")

// isVEX reports whether the instruction at b is VEX or EVEX encoded: in
// 64-bit mode C4, C5 and 62 after any legacy prefixes always start one.
func isVEX(b []byte) bool {
	for _, c := range b {
		switch c {
		case 0x66, 0x67, 0xf0, 0xf2, 0xf3, 0x2e, 0x36, 0x3e, 0x26, 0x64, 0x65:
			continue
		case 0xc4, 0xc5, 0x62:
			return true
		}
		return false
	}
	return false
}

// arm64Known reports whether an instruction word that arm64asm cannot decode
// belongs to a class Go emits and that is never a return: the LSE atomics
// (CAS*, LDADD/LDCLR/LDEOR/LDSET/SWP*), used inline by sync/atomic, and
// system instructions such as MSR DIT. arm64 instructions are fixed-width and
// aligned, so accepting them cannot shift an instruction boundary; literal
// pool words and anything else unknown still refuse the function.
func arm64Known(w uint32) bool {
	return w&0x3fa07c00 == 0x08a07c00 || // CAS, CASA, CASL, CASAL
		w&0x3f200c00 == 0x38200000 || // atomic memory operations
		w&0xffc00000 == 0xd5000000 // system instructions
}

package symbols

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

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

// maxFuncSize bounds the body we are willing to disassemble.
const maxFuncSize = 1 << 24

var endbr64 = []byte{0xf3, 0x0f, 0x1e, 0xfa}

// ReturnOffsets returns the file offsets of every return instruction in fn's
// body, in ascending order. A uprobe at each of them observes every normal
// return; uretprobes cannot be used on Go code because the runtime moves
// goroutine stacks. If any instruction of the body fails to decode the
// result is a *DecodeError and no offsets.
func (f *File) ReturnOffsets(fn Func) (offs []uint64, err error) {
	defer func() {
		if !catchPanics {
			return
		}
		if p := recover(); p != nil {
			offs, err = nil, &DecodeError{Func: fn.Name, Offset: fn.Offset, Err: fmt.Errorf("disassembler panic: %v", p)}
		}
	}()
	if f.closed.Load() {
		return nil, os.ErrClosed
	}
	if fn.End <= fn.Entry || fn.End-fn.Entry > maxFuncSize {
		return nil, fmt.Errorf("%s: bad function bounds [%#x, %#x)", fn.Name, fn.Entry, fn.End)
	}
	start, ok := f.fileOffset(fn.Entry)
	if !ok {
		return nil, fmt.Errorf("%s: entry %#x is outside the text segment", fn.Name, fn.Entry)
	}
	if _, ok := f.fileOffset(fn.End - 1); !ok {
		return nil, fmt.Errorf("%s: end %#x is outside the text segment", fn.Name, fn.End)
	}
	code, err := f.readAt(start, fn.End-fn.Entry)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn.Name, err)
	}
	if f.Arch != "amd64" && f.Arch != "arm64" {
		return nil, fmt.Errorf("%s: return offsets are not supported on %s", fn.Name, f.Arch)
	}
	rets, bad, err := scanReturns(f.Arch, code)
	if err != nil {
		return nil, &DecodeError{Func: fn.Name, Offset: start + uint64(bad), Bytes: bytes.Clone(code[bad:min(bad+16, len(code))]), Err: err}
	}
	for _, r := range rets {
		offs = append(offs, start+uint64(r))
	}
	return offs, nil
}

// scanReturns returns the offsets in code, a function body of arch (amd64
// or arm64), of its return instructions, in ascending order. If an
// instruction does not decode, it returns its offset and why.
func scanReturns(arch string, code []byte) (rets []int, bad int, err error) {
	switch arch {
	case "amd64":
		for i := 0; i < len(code); {
			// x86asm does not know ENDBR64 (emitted with GOAMD64 and
			// CET-enabled C code in cgo binaries).
			if bytes.HasPrefix(code[i:], endbr64) {
				i += len(endbr64)
				continue
			}
			if isVEX(code[i:]) {
				return nil, i, errVEX
			}
			inst, err := x86asm.Decode(code[i:], 64)
			if err == nil && inst.Len <= 0 {
				err = fmt.Errorf("zero-length instruction")
			}
			if err != nil {
				return nil, i, err
			}
			if inst.Op == x86asm.RET {
				rets = append(rets, i)
			}
			i += inst.Len
		}
	case "arm64":
		// The arm64 assembler pads function bodies to 16 bytes with zero
		// words, which are included in the symbol size and the pc tables; a
		// zero word is never an instruction Go emits.
		for len(code) >= 4 && bytes.Equal(code[len(code)-4:], []byte{0, 0, 0, 0}) {
			code = code[:len(code)-4]
		}
		if len(code)%4 != 0 {
			return nil, len(code) &^ 3, fmt.Errorf("body size %d is not a multiple of 4", len(code))
		}
		for i := 0; i < len(code); i += 4 {
			inst, err := arm64asm.Decode(code[i:])
			if err != nil && arm64Known(binary.LittleEndian.Uint32(code[i:])) {
				continue
			}
			if err != nil {
				return nil, i, err
			}
			if inst.Op == arm64asm.RET {
				rets = append(rets, i)
			}
		}
	default:
		return nil, 0, fmt.Errorf("unsupported architecture %s", arch)
	}
	return rets, 0, nil
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

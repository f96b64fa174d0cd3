package args

import "fmt"

// A Word is one register-sized part of a value, by the class of register
// Go's ABIInternal gives it.
type Word uint8

const (
	IntWord Word = iota
	FloatWord
)

// Integer and floating-point argument registers of Go's ABIInternal, per
// GOARCH.
var abiRegs = map[string]struct{ ints, floats int }{
	"amd64": {9, 15},
	"arm64": {16, 16},
}

// A RegAssigner assigns the parameters of a function, or its results, to
// registers as Go's ABIInternal does: each goes entirely into registers,
// word by word, or entirely onto the stack when the registers left do not
// suffice or its type is never passed in registers. The types come from
// DWARF here and from go/types in internal/ciliumsrc: each splits its
// types into words, and this is the one assignment both use. Results are
// assigned from the first register again, by a new RegAssigner.
type RegAssigner struct {
	ints, floats       int
	maxInts, maxFloats int
}

// NewRegAssigner returns an assigner for the registers of arch.
func NewRegAssigner(arch string) (*RegAssigner, error) {
	regs, ok := abiRegs[arch]
	if !ok {
		return nil, fmt.Errorf("register arguments on %s are not supported", arch)
	}
	return &RegAssigner{maxInts: regs.ints, maxFloats: regs.floats}, nil
}

// Assign assigns the next value, of the given words; inRegs is false for a
// type the ABI never puts in registers (an array of two or more elements).
// It returns the integer registers the value gets, in order, or onStack.
func (a *RegAssigner) Assign(words []Word, inRegs bool) (regs []int, onStack bool) {
	ints, floats := 0, 0
	for _, w := range words {
		if w == FloatWord {
			floats++
		} else {
			ints++
		}
	}
	if !inRegs || a.ints+ints > a.maxInts || a.floats+floats > a.maxFloats {
		return nil, true
	}
	for _, w := range words {
		if w == IntWord {
			regs = append(regs, a.ints)
			a.ints++
		}
	}
	a.floats += floats
	return regs, false
}

// ErrorResultIn is the capture of a function's error result whose itab
// word is in result register reg (its data word in the next one), in the
// raw form retN:error.
func ErrorResultIn(reg int) Capture {
	c := Capture{Name: "error", Reg: reg, InReg: true, AtReturn: true, Kind: KindError, Size: 16}
	c.Expr = c.Raw()
	return c
}

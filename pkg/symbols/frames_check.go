package symbols

import (
	"fmt"
	"strings"

	"github.com/cilium-tracer/tracer/pkg/symbols/disasm"
)

// A FrameError reports a function whose decoded instructions disagree with
// the compiler's pc tables: a RET where the pcsp table says the frame is not
// popped, or a table whose value changes inside an instruction. Either means
// the disassembler is not seeing the instructions the compiler emitted (data
// in text, such as an arm64 literal pool word that decodes as RET), and a
// probe placed from it could corrupt the target.
type FrameError struct {
	Func   string
	Offset uint64 // file offset of the disagreement
	Reason string
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("%s: %s at file offset %#x", e.Func, e.Reason, e.Offset)
}

// checkFrames checks b against fn's pcsp and pcfile tables, which come from
// .gopclntab and so are there in stripped executables too: every RET must be
// where the stack pointer is back at its value on entry, and every point
// where either table changes value must start an instruction.
func (t *pclntab) checkFrames(fn Func, b *disasm.Body) error {
	fail := func(pc uint64, format string, args ...any) error {
		return &FrameError{Func: fn.Name, Offset: b.Start + pc - fn.Entry, Reason: fmt.Sprintf(format, args...)}
	}
	i, ok := t.find(fn.Entry)
	if !ok || t.entry(i) != fn.Entry {
		return fail(fn.Entry, "no Go function starts here in the pclntab")
	}
	r, ok := t.record(i)
	if !ok {
		return fail(fn.Entry, "malformed pclntab function record")
	}
	rets := b.Rets
	var bad error
	err := t.pcRuns(r.word(funcPCSP), fn.Entry, fn.End, func(lo, hi uint64, sp int32) bool {
		if !b.Boundary(lo - fn.Entry) {
			bad = fail(lo, "pcsp table changes inside an instruction")
			return false
		}
		for ; len(rets) > 0 && fn.Entry+rets[0]-b.Start < hi; rets = rets[1:] {
			if sp != 0 {
				bad = fail(fn.Entry+rets[0]-b.Start, "RET where the pcsp table says the frame is not popped (SP delta %d)", sp)
				return false
			}
		}
		return true
	})
	switch {
	case err != nil:
		return fail(fn.Entry, "pcsp table: %v", err)
	case bad != nil:
		return bad
	case len(rets) > 0:
		return fail(fn.Entry+rets[0]-b.Start, "RET outside the pcsp table")
	}
	err = t.pcRuns(r.word(funcPCFile), fn.Entry, fn.End, func(lo, _ uint64, _ int32) bool {
		if !b.Boundary(lo - fn.Entry) {
			bad = fail(lo, "pcfile table changes inside an instruction")
			return false
		}
		return true
	})
	if err != nil {
		return fail(fn.Entry, "pcfile table: %v", err)
	}
	return bad
}

// pcRuns calls run for each run of the pc-value table at off, in order: the
// pcs in [lo, hi) have value val. The runs start at entry and must end
// within end; the end of the last run must be an instruction boundary too,
// which run checks as the lo of a final call with hi == lo. It stops early
// when run returns false.
func (t *pclntab) pcRuns(off uint32, entry, end uint64, run func(lo, hi uint64, val int32) bool) error {
	it := t.pcIter(off, entry)
	if it.p == nil {
		return fmt.Errorf("missing (offset %d)", off)
	}
	for it.next() {
		if it.end > end {
			return fmt.Errorf("runs past the function's end %#x", end)
		}
		if !run(it.start, it.end, it.val) {
			return nil
		}
	}
	if it.err != nil {
		return it.err
	}
	run(it.end, it.end, it.val)
	return nil
}

// A NoReturnError reports a function without a RET instruction. Either it
// never returns, or it ends in tail calls: compiler-generated wrappers of a
// method promoted through an embedded pointer jump to the method itself.
// The callees' returns are then the function's, so they are what to trace.
type NoReturnError struct {
	Func      string
	TailCalls []string // the functions it jumps to, if any
}

func (e *NoReturnError) Error() string {
	switch len(e.TailCalls) {
	case 0:
		return fmt.Sprintf("%s: no RET instruction (the function never returns)", e.Func)
	case 1:
		return fmt.Sprintf("%s: no RET instruction: it ends in a tail call to %s; trace %s instead", e.Func, e.TailCalls[0], e.TailCalls[0])
	}
	return fmt.Sprintf("%s: no RET instruction: it ends in tail calls to %s; trace those instead", e.Func, strings.Join(e.TailCalls, ", "))
}

// noReturn names the functions b jumps to.
func (t *pclntab) noReturn(fn Func, b *disasm.Body) error {
	e := &NoReturnError{Func: fn.Name}
	seen := map[uint64]bool{}
	for _, br := range b.Branches {
		if br.Call || seen[br.Target] {
			continue
		}
		seen[br.Target] = true
		name := fmt.Sprintf("%#x", br.Target)
		if i, ok := t.find(br.Target); ok && t.entry(i) == br.Target {
			name = string(t.funcName(i))
		}
		e.TailCalls = append(e.TailCalls, name)
	}
	return e
}

// spAt returns the stack pointer delta the pcsp table of fn, which the
// caller found in the table, gives at pc.
func (t *pclntab) spAt(fn Func, pc uint64) (int32, error) {
	i, _ := t.find(fn.Entry)
	r, ok := t.record(i)
	if !ok {
		return 0, fmt.Errorf("malformed pclntab function record")
	}
	var sp int32
	found := false
	err := t.pcRuns(r.word(funcPCSP), fn.Entry, fn.End, func(lo, hi uint64, val int32) bool {
		if lo <= pc && pc < hi {
			sp, found = val, true
			return false
		}
		return true
	})
	if err == nil && !found {
		err = fmt.Errorf("no pcsp entry for %#x", pc)
	}
	return sp, err
}

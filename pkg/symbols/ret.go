package symbols

import (
	"bytes"
	"fmt"
	"os"

	"github.com/cilium-tracer/tracer/pkg/symbols/disasm"
)

// maxFuncSize bounds the body we are willing to disassemble.
const maxFuncSize = 1 << 24

// ReturnOffsets returns the file offsets of every return instruction in fn's
// body, in ascending order. A uprobe at each of them observes every normal
// return; uretprobes cannot be used on Go code because the runtime moves
// goroutine stacks. If any instruction of the body fails to decode the
// result is a *disasm.DecodeError; if the instructions disagree with the
// compiler's pc tables, a *FrameError; if there is no RET, a
// *NoReturnError. There are no offsets then.
func (f *File) ReturnOffsets(fn Func) ([]uint64, error) {
	b, t, err := f.body(fn)
	if err != nil {
		return nil, err
	}
	if len(b.Rets) == 0 {
		return nil, t.noReturn(fn, b)
	}
	return b.Rets, nil
}

// EntryOnce returns the file offset of the first instruction that each call
// of fn passes exactly once: the one after its stack-bound check, or the
// entry when it has none. A call passes its entry again each time the check
// sends it through runtime.morestack, to grow the stack or to honour a
// preemption request, so a probe that counts entries there counts some calls
// twice. After the check the stack pointer, the return address and the
// argument registers are still as at the entry. Errors are as for
// ReturnOffsets, without the *NoReturnError.
func (f *File) EntryOnce(fn Func) (uint64, error) {
	b, t, err := f.body(fn)
	if err != nil {
		return 0, err
	}
	c := b.Check
	if c == nil {
		return fn.Offset, nil
	}
	if i, ok := t.find(c.Callee); !ok || t.entry(i) != c.Callee || !bytes.HasPrefix(t.funcName(i), []byte("runtime.morestack")) {
		return fn.Offset, nil // a branch of the body that looks like one, not a stack check
	}
	pc := fn.Entry + c.End - b.Start
	if sp, err := t.spAt(fn, pc); err != nil || sp != 0 {
		return 0, &FrameError{Func: fn.Name, Offset: c.End, Reason: fmt.Sprintf("stack check ends where the pcsp table says the frame is allocated (SP delta %d, %v)", sp, err)}
	}
	return c.End, nil
}

// body decodes fn and checks it against its pc tables.
func (f *File) body(fn Func) (b *disasm.Body, t *pclntab, err error) {
	defer func() {
		if !catchPanics {
			return
		}
		if p := recover(); p != nil {
			b, t, err = nil, nil, &disasm.DecodeError{Func: fn.Name, Offset: fn.Offset, Err: fmt.Errorf("disassembler panic: %v", p)}
		}
	}()
	b, err = f.decode(fn)
	if err != nil {
		return nil, nil, err
	}
	t, err = f.pcln()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", fn.Name, err)
	}
	if err := t.checkFrames(fn, b); err != nil {
		return nil, nil, err
	}
	return b, t, nil
}

// decode disassembles fn's body. Any instruction that fails to decode makes
// it a *disasm.DecodeError.
func (f *File) decode(fn Func) (*disasm.Body, error) {
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
	return disasm.Decode(f.Arch, fn.Name, fn.Entry, start, code)
}

package symbols

import (
	"encoding/binary"
	"slices"
)

// maxInlineDepth bounds the walk up an inline tree, which corrupt data could
// make cyclic.
const maxInlineDepth = 256

// maxCachedPCs bounds the Frames cache; stacks of a traced process revisit a
// small set of PCs, so a cache that is simply dropped when full works well.
const maxCachedPCs = 1 << 16

// Frames symbolizes pc, a virtual address in the executable's own address
// space (subtract procmaps.Bias for runtime addresses of a PIE). The result
// lists the functions inlined at pc first, innermost first, and the physical
// function last. It is nil if pc is not inside a Go function. Frames is
// exact: for a return address, pass the address minus one to get the call's
// line.
func (f *File) Frames(pc uint64) []Frame {
	if f.closed.Load() {
		return nil
	}
	f.mu.Lock()
	if fr, ok := f.frames[pc]; ok {
		f.mu.Unlock()
		return slices.Clone(fr)
	}
	f.mu.Unlock()
	t, err := f.pcln()
	if err != nil {
		return nil
	}
	fr := f.frames1(t, pc)
	f.mu.Lock()
	if f.frames == nil || len(f.frames) >= maxCachedPCs {
		f.frames = make(map[uint64][]Frame)
	}
	f.frames[pc] = fr
	f.mu.Unlock()
	return slices.Clone(fr)
}

func (f *File) frames1(t *pclntab, pc uint64) []Frame {
	return t.frames(pc, f.gofuncAddr, f.readVaddr)
}

// frames symbolizes pc. gofunc returns the address of go:func.*, the base of
// inline tree offsets, and read reads n bytes at a virtual address.
func (t *pclntab) frames(pc uint64, gofunc func() (uint64, bool), read func(v, n uint64) ([]byte, error)) (frames []Frame) {
	defer func() {
		if !catchPanics {
			return
		}
		if recover() != nil {
			frames = nil
		}
	}()
	i, ok := t.find(pc)
	if !ok {
		return nil
	}
	r, ok := t.record(i)
	if !ok {
		return nil
	}
	cu := r.word(funcCUOffset)
	pcfile, pcln := r.word(funcPCFile), r.word(funcPCLn)
	// The line table covers exactly the function's instructions: a pc it
	// does not cover is alignment padding before the next function.
	if _, ok := t.pcvalue(pcln, r.entry, pc); pcln != 0 && !ok {
		return nil
	}
	frame := func(name []byte, at uint64, inlined bool) Frame {
		fileIdx, _ := t.pcvalue(pcfile, r.entry, at)
		line, ok := t.pcvalue(pcln, r.entry, at)
		if !ok {
			line = 0
		}
		return Frame{PC: pc, Func: string(name), File: t.file(cu, fileIdx), Line: int(line), Inlined: inlined}
	}
	at := pc
	if tree, ok := inlineTree(r, gofunc); ok {
		inlIdx := r.pcdata(pcdataInlTree)
		layout := t.inlLayout()
		for depth := 0; depth < maxInlineDepth; depth++ {
			ix, ok := t.pcvalue(inlIdx, r.entry, at)
			if !ok || ix < 0 {
				break
			}
			call, err := read(tree+uint64(ix)*layout.size, layout.size)
			if err != nil {
				break
			}
			nameOff := binary.LittleEndian.Uint32(call[layout.nameOff:])
			parentPC := int32(binary.LittleEndian.Uint32(call[layout.parentPC:]))
			frames = append(frames, frame(t.name(nameOff), at, true))
			at = r.entry + uint64(int64(parentPC))
		}
	}
	return append(frames, frame(t.name(r.nameOff()), at, false))
}

// inlineTree returns the address of the function's inline tree: its
// FUNCDATA_InlTree offset is relative to go:func.*, which stripped binaries
// only reveal through the moduledata.
func inlineTree(r funcRecord, gofunc func() (uint64, bool)) (uint64, bool) {
	off, ok := r.funcdata(funcdataInlTree)
	if !ok || r.pcdata(pcdataInlTree) == 0 {
		return 0, false
	}
	base, ok := gofunc()
	if !ok {
		return 0, false
	}
	return base + uint64(off), true
}

func (f *File) gofuncAddr() (uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.gofuncDone {
		f.gofuncDone = true
		if v, ok := f.symbolValue("go:func.*"); ok {
			f.gofunc = v
		} else if f.table != nil {
			if md, err := f.moduledata(f.table); err == nil {
				f.gofunc = md.gofunc
			}
		}
	}
	return f.gofunc, f.gofunc != 0
}

// SPDelta returns the size of the frame the Go function holding pc, a
// virtual address in the executable's own address space, has allocated at
// pc: how far the stack pointer there lies below its value at the
// function's entry, from the compiler's pcsp table. It is what unwinding a
// stack by stack pointer needs where frame pointers are missing.
func (f *File) SPDelta(pc uint64) (delta int32, ok bool) {
	if f.closed.Load() {
		return 0, false
	}
	t, err := f.pcln()
	if err != nil {
		return 0, false
	}
	defer func() {
		if !catchPanics {
			return
		}
		if recover() != nil {
			delta, ok = 0, false
		}
	}()
	i, ok := t.find(pc)
	if !ok {
		return 0, false
	}
	r, ok := t.record(i)
	if !ok {
		return 0, false
	}
	return t.pcvalue(r.word(funcPCSP), r.entry, pc)
}

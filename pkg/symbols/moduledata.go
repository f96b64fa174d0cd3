package symbols

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
)

// pcln returns the parsed .gopclntab, parsing it on first use.
func (f *File) pcln() (*pclntab, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.tableDone {
		f.table, f.tableErr = f.loadPCLNTab()
		f.tableDone = true
	}
	return f.table, f.tableErr
}

func (f *File) loadPCLNTab() (t *pclntab, err error) {
	defer func() {
		if !catchPanics {
			return
		}
		if p := recover(); p != nil {
			t, err = nil, fmt.Errorf("malformed pclntab: %v", p)
		}
	}()
	var data []byte
	var addr uint64
	if sect := pclntabSection(f.elf); sect != nil {
		if data, err = f.SectionData(sect); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoPCLNTab, err)
		}
		addr = sect.Addr
	} else if data, addr = f.searchPCLNTab(); data == nil {
		return nil, ErrNoPCLNTab
	}
	t, headerText, err := parsePCLNTab(data)
	if err != nil {
		return nil, err
	}
	t.addr = addr
	switch {
	case headerText != 0:
		t.textStart = headerText
	case !f.Stripped:
		if v, ok := f.symbolValue("runtime.text"); ok {
			t.textStart = v
			break
		}
		fallthrough
	default:
		// Go 1.26 no longer stores the text start in the pclntab header; the
		// moduledata's text field holds it.
		md, err := f.moduledata(t)
		if err != nil {
			return nil, fmt.Errorf("pclntab has no text start: %w", err)
		}
		t.textStart = md.text
	}
	// Every entry must lie in the executable segment, or the text start is
	// wrong.
	if !t.within(f.text.Vaddr, f.text.Vaddr+f.text.Memsz) {
		return nil, fmt.Errorf("pclntab: functions [%#x, %#x) outside the text segment", t.entry(0), t.entry(t.nfunc))
	}
	return t, nil
}

// symbolValue looks a symbol up in .symtab.
func (f *File) symbolValue(name string) (uint64, bool) {
	st, err := f.symbols()
	if err != nil {
		return 0, false
	}
	v, _, ok := st.lookup(name)
	return v, ok
}

// moduleInfo holds the fields of runtime.firstmoduledata we need.
type moduleInfo struct {
	text   uint64 // runtime.text
	gofunc uint64 // go:func.*, the base of funcdata offsets
	types  uint64 // the base of type name offsets (runtime.types)
	// itablinks is where the slice of the executable's static itabs
	// (pointers) is, and how many.
	itablinks, nitabs uint64
}

// Offsets in runtime.moduledata (64-bit, Go 1.20 through 1.26).
const (
	mdPCHeader = 0
	mdFtab     = 128
	mdFtabLen  = 136
	mdMinPC    = 160
	mdText     = 176
	mdGofunc   = 320
	// Go 1.18 and 1.19 had no covctrs/ecovctrs before rodata and gofunc.
	mdGofunc118 = 304
	mdTypes     = 296
	mdTypes118  = 280
	// itablinks follows textsectmap and typelinks, three slices after
	// gofunc; Go 1.26 put epclntab after gofunc.
	mdItablinks    = 376
	mdItablinks118 = 360
	mdEpclntab     = 328
)

// moduledata locates runtime.firstmoduledata: Go 1.26 puts it in its own
// .go.module section; before, it is the one word in the data sections that
// points at the pclntab header and whose ftab slice matches the pclntab. In
// position-independent executables its pointers are dynamic relocations, so
// they are read through .rela.dyn when the file holds zeros.
func (f *File) moduledata(t *pclntab) (moduleInfo, error) {
	words := f.newWordReader()
	pclnAddr := t.addr
	gofuncOff := uint64(mdGofunc)
	if t.magic == go118Magic {
		gofuncOff = mdGofunc118
	}
	ftabAddr := pclnAddr + uint64(len(t.data)-len(t.funcs))
	check := func(addr uint64) (moduleInfo, bool) {
		if words.at(addr+mdPCHeader) != pclnAddr || words.at(addr+mdFtab) != ftabAddr || words.at(addr+mdFtabLen) != uint64(t.nfunc)+1 {
			return moduleInfo{}, false
		}
		md := moduleInfo{text: words.at(addr + mdText), gofunc: words.at(addr + gofuncOff)}
		// minpc is the first function's entry.
		if md.text == 0 || words.at(addr+mdMinPC) != md.text+t.entryOff(0) {
			return moduleInfo{}, false
		}
		typesOff, itabsOff := uint64(mdTypes), uint64(mdItablinks)
		if t.magic == go118Magic {
			typesOff, itabsOff = mdTypes118, mdItablinks118
		} else if e := words.at(addr + mdEpclntab); e > pclnAddr && e-pclnAddr <= uint64(len(t.data)) {
			itabsOff += 8
		}
		md.types = words.at(addr + typesOff)
		md.itablinks, md.nitabs = words.at(addr+itabsOff), words.at(addr+itabsOff+8)
		return md, true
	}
	if s := f.elf.Section(".go.module"); s != nil {
		if md, ok := check(s.Addr); ok {
			return md, nil
		}
	}
	for _, name := range []string{".noptrdata", ".data.rel.ro", ".data"} {
		s := f.elf.Section(name)
		if s == nil || s.Type == elf.SHT_NOBITS {
			continue
		}
		for _, addr := range words.find(s, pclnAddr) {
			if md, ok := check(addr); ok {
				return md, nil
			}
		}
	}
	return moduleInfo{}, errors.New("runtime.firstmoduledata not found")
}

// A wordReader reads pointer-sized words at virtual addresses, resolving
// R_*_RELATIVE relocations of position-independent executables. The
// relocation tables are scanned rather than indexed: a large PIE has a
// million of them and only a handful of words are ever read.
type wordReader struct {
	f      *File
	relas  [][]byte
	loaded bool
}

func (f *File) newWordReader() *wordReader { return &wordReader{f: f} }

func (w *wordReader) at(addr uint64) uint64 {
	b, err := w.f.readVaddr(addr, 8)
	if err != nil {
		return 0
	}
	if v := binary.LittleEndian.Uint64(b); v != 0 || !w.f.PIE {
		return v
	}
	var v uint64
	w.eachRelative(func(off, addend uint64) bool {
		if off == addr {
			v = addend
			return false
		}
		return true
	})
	return v
}

// eachRelative calls fn with the target and addend of every relative
// relocation until fn returns false.
func (w *wordReader) eachRelative(fn func(off, addend uint64) bool) {
	if !w.loaded {
		w.loaded = true
		for _, s := range w.f.elf.Sections {
			if s.Type != elf.SHT_RELA {
				continue
			}
			if data, err := w.f.SectionData(s); err == nil {
				w.relas = append(w.relas, data)
			}
		}
	}
	for _, data := range w.relas {
		for off := 0; off+24 <= len(data); off += 24 {
			info := binary.LittleEndian.Uint64(data[off+8:])
			if typ := uint32(info); typ != uint32(elf.R_X86_64_RELATIVE) && typ != uint32(elf.R_AARCH64_RELATIVE) {
				continue
			}
			if !fn(binary.LittleEndian.Uint64(data[off:]), binary.LittleEndian.Uint64(data[off+16:])) {
				return
			}
		}
	}
}

// find returns the 8-byte aligned addresses in s that hold the value v,
// directly or through a relocation.
func (w *wordReader) find(s *elf.Section, v uint64) []uint64 {
	data, err := w.f.SectionData(s)
	if err != nil {
		return nil
	}
	var out []uint64
	start := (8 - s.Addr%8) % 8
	for off := start; off+8 <= uint64(len(data)); off += 8 {
		if binary.LittleEndian.Uint64(data[off:]) == v {
			out = append(out, s.Addr+off)
		}
	}
	if w.f.PIE {
		w.eachRelative(func(addr, addend uint64) bool {
			if addend == v && addr >= s.Addr && addr-s.Addr < s.Size {
				out = append(out, addr)
			}
			return true
		})
	}
	return out
}

// searchPCLNTab finds the pclntab in executables whose section headers do
// not name it: external linkers merge .gopclntab into .data.rel.ro, and
// strip(1) may drop section names. Candidates are header-shaped words in the
// loadable non-executable segments; the moduledata pointing at one confirms
// it.
func (f *File) searchPCLNTab() ([]byte, uint64) {
	for _, p := range f.elf.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_X != 0 || p.Filesz == 0 {
			continue
		}
		seg, err := f.readAt(p.Off, p.Filesz)
		if err != nil {
			continue
		}
		for off := (8 - p.Vaddr%8) % 8; off+16 <= uint64(len(seg)); off += 8 {
			b := seg[off:]
			if b[3] != 0xff || b[2] != 0xff || b[1] != 0xff || (b[0] != 0xf0 && b[0] != 0xf1) || b[4] != 0 || b[5] != 0 || b[7] != 8 {
				continue
			}
			t, _, err := parsePCLNTab(b)
			if err != nil {
				continue
			}
			t.addr = p.Vaddr + off
			if _, err := f.moduledata(t); err == nil {
				return b, t.addr
			}
		}
	}
	return nil, 0
}

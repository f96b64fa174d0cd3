package symbols

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
)

// A smallTable is a pclntab cut out of a real executable: a run of
// consecutive functions with their names, pc-value tables, files and inline
// trees, re-encoded so that fuzz seeds are kilobytes, not megabytes.
type smallTable struct {
	pclntab   []byte
	textStart uint64 // entry of the first function
	gofunc    []byte // the inline trees: go:func.*
	text      []byte // the functions' code, at textStart
	magic     uint32
	nfunc     int
}

// cutPCLNTab re-encodes functions [first, first+n) of f's pclntab.
func cutPCLNTab(tb testing.TB, f *File, first, n int) smallTable {
	tb.Helper()
	t, err := f.pcln()
	if err != nil {
		tb.Fatal(err)
	}
	if first+n > t.nfunc {
		tb.Fatalf("cut [%d, %d) of %d functions", first, first+n, t.nfunc)
	}
	base := t.entryOff(first)
	var names, files, pctab, gofunc []byte
	var cutab []uint32
	pctab = append(pctab, 0) // offset 0 means no table
	addName := func(off uint32) uint32 {
		o := uint32(len(names))
		names = append(append(names, t.name(off)...), 0)
		return o
	}
	copyTable := func(off, entry uint64) uint32 {
		if off == 0 {
			return 0
		}
		it := t.pcIter(uint32(off), entry)
		start := it.p
		rest := it.p
		for it.next() {
			rest = it.p
		}
		o := uint32(len(pctab))
		pctab = append(append(pctab, start[:len(start)-len(rest)]...), 0)
		return o
	}
	values := func(off uint32, entry uint64) []int32 {
		var vs []int32
		for it := t.pcIter(off, entry); it.next(); {
			vs = append(vs, it.val)
		}
		return vs
	}
	layout := t.inlLayout()
	var recs [][]byte
	for i := first; i < first+n; i++ {
		r, ok := t.record(i)
		if !ok {
			tb.Fatalf("function %d has no record", i)
		}
		b := bytes.Clone(r.b)
		put := func(off uint64, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }
		put(0, uint32(t.entryOff(i)-base))
		put(funcNameOff, addName(r.nameOff()))
		for _, w := range []uint64{funcPCSP, funcPCFile, funcPCLn} {
			put(w, copyTable(uint64(r.word(w)), r.entry))
		}
		npc := r.word(funcNPCData)
		for j := range npc {
			put(r.hdr+4*uint64(j), copyTable(uint64(r.pcdata(j)), r.entry))
		}
		// A compilation unit of the files this function uses.
		cu := uint32(len(cutab))
		idx := values(r.word(funcPCFile), r.entry)
		top := int32(-1)
		for _, v := range idx {
			top = max(top, v)
		}
		for j := int32(0); j <= top && j < 1024; j++ {
			if !slices.Contains(idx, j) {
				cutab = append(cutab, ^uint32(0))
				continue
			}
			cutab = append(cutab, uint32(len(files)))
			files = append(append(files, t.file(r.word(funcCUOffset), j)...), 0)
		}
		put(funcCUOffset, cu)
		nfd := uint64(b[r.hdr-funcNFuncDataBack])
		for j := range nfd {
			off := r.hdr + 4*uint64(npc) + 4*j
			tree, ok := inlineTree(r, f.gofuncAddr)
			if j != funcdataInlTree || !ok {
				put(off, ^uint32(0))
				continue
			}
			n := int32(0)
			for _, v := range values(r.pcdata(pcdataInlTree), r.entry) {
				n = max(n, v+1)
			}
			calls, err := f.readVaddr(tree, uint64(n)*layout.size)
			if err != nil {
				tb.Fatal(err)
			}
			calls = bytes.Clone(calls)
			for k := uint64(0); k < uint64(n); k++ {
				c := calls[k*layout.size:]
				binary.LittleEndian.PutUint32(c[layout.nameOff:], addName(binary.LittleEndian.Uint32(c[layout.nameOff:])))
			}
			for len(gofunc)%4 != 0 {
				gofunc = append(gofunc, 0)
			}
			put(off, uint32(len(gofunc)))
			gofunc = append(gofunc, calls...)
		}
		recs = append(recs, b)
	}
	// The function table, then the records it points at.
	ftab := make([]byte, 8*(n+1))
	for k, b := range recs {
		binary.LittleEndian.PutUint32(ftab[8*k:], uint32(t.entryOff(first+k)-base))
		for len(ftab)%4 != 0 {
			ftab = append(ftab, 0)
		}
		binary.LittleEndian.PutUint32(ftab[8*k+4:], uint32(len(ftab)))
		ftab = append(ftab, b...)
	}
	binary.LittleEndian.PutUint32(ftab[8*n:], uint32(t.entryOff(first+n)-base))

	cut := make([]byte, 8+8*8)
	binary.LittleEndian.PutUint32(cut, t.magic)
	cut[6], cut[7] = byte(t.quantum), 8
	word := func(i int, v uint64) { binary.LittleEndian.PutUint64(cut[8+8*i:], v) }
	word(0, uint64(n))
	word(1, uint64(bytes.Count(files, []byte{0})))
	// word 2, the text start, stays 0 as in Go 1.26: moduledata supplies it.
	for i, part := range [][]byte{names, u32s(cutab), files, pctab, ftab} {
		for len(cut)%8 != 0 {
			cut = append(cut, 0)
		}
		word(3+i, uint64(len(cut)))
		cut = append(cut, part...)
	}
	text, err := f.readVaddr(t.textStart+base, t.entryOff(first+n)-base)
	if err != nil {
		tb.Fatal(err)
	}
	return smallTable{pclntab: cut, textStart: t.textStart + base, gofunc: gofunc, text: bytes.Clone(text), magic: t.magic, nfunc: n}
}

func u32s(v []uint32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], x)
	}
	return b
}

// funcIndex returns the index of the function named name in f's pclntab.
func funcIndex(tb testing.TB, f *File, name string) int {
	tb.Helper()
	t, err := f.pcln()
	if err != nil {
		tb.Fatal(err)
	}
	for i := range t.nfunc {
		if string(t.funcName(i)) == name {
			return i
		}
	}
	tb.Fatalf("no function %s", name)
	return 0
}

// tinyELF writes a stripped Go executable holding only st: its code in a
// text segment, and the pclntab, inline trees, a moduledata in .go.module
// (which the text start comes from) and build information in a read-only
// segment.
func tinyELF(st smallTable, machine elf.Machine, goVersion string) []byte {
	const (
		ehdrSize  = 64
		phdrSize  = 56
		shdrSize  = 64
		roAddr    = 0x800000
		textFile  = ehdrSize + 2*phdrSize
		mdSize    = 328
		alignment = 16
	)
	type section struct {
		name  string
		typ   elf.SectionType
		flags elf.SectionFlag
		addr  uint64
		off   uint64
		data  []byte
	}
	var ro []byte
	place := func(b []byte) uint64 {
		for len(ro)%alignment != 0 {
			ro = append(ro, 0)
		}
		off := uint64(len(ro))
		ro = append(ro, b...)
		return roAddr + off
	}
	info := []byte("\xff Go buildinf:\x08\x02")
	info = append(info, make([]byte, 16)...)
	info = binary.AppendUvarint(info, uint64(len(goVersion)))
	info = append(append(info, goVersion...), 0)
	infoAddr := place(info)
	pclnAddr := place(st.pclntab)
	gofunc := place(st.gofunc)
	ftab := binary.LittleEndian.Uint64(st.pclntab[8+8*7:])
	md := make([]byte, mdSize)
	mdWord := func(off, v uint64) { binary.LittleEndian.PutUint64(md[off:], v) }
	mdWord(mdPCHeader, pclnAddr)
	mdWord(mdFtab, pclnAddr+ftab)
	mdWord(mdFtabLen, uint64(st.nfunc)+1)
	mdWord(mdMinPC, st.textStart)
	mdWord(mdText, st.textStart)
	if st.magic == go118Magic {
		mdWord(mdGofunc118, gofunc)
	} else {
		mdWord(mdGofunc, gofunc)
	}
	mdAddr := place(md)
	roFile := uint64(textFile + len(st.text))
	sections := []section{
		{},
		{name: ".text", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, addr: st.textStart, off: textFile, data: st.text},
		{name: ".go.buildinfo", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC, addr: infoAddr, off: roFile + infoAddr - roAddr, data: info},
		{name: ".gopclntab", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC, addr: pclnAddr, off: roFile + pclnAddr - roAddr, data: st.pclntab},
		{name: ".go.module", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC | elf.SHF_WRITE, addr: mdAddr, off: roFile + mdAddr - roAddr, data: md},
	}
	shstr := []byte{0}
	names := make([]uint32, len(sections)+1)
	for i, s := range sections[1:] {
		names[i+1] = uint32(len(shstr))
		shstr = append(append(shstr, s.name...), 0)
	}
	names[len(sections)] = uint32(len(shstr))
	shstr = append(shstr, ".shstrtab\x00"...)
	shstrOff := roFile + uint64(len(ro))
	sections = append(sections, section{name: ".shstrtab", typ: elf.SHT_STRTAB, off: shstrOff, data: shstr})
	shoff := shstrOff + uint64(len(shstr))

	var b bytes.Buffer
	le := binary.LittleEndian
	w := func(v any) { binary.Write(&b, le, v) }
	b.Write([]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT), 0, 0, 0, 0, 0, 0, 0, 0, 0})
	w(uint16(elf.ET_EXEC))
	w(uint16(machine))
	w(uint32(elf.EV_CURRENT))
	w(st.textStart) // entry
	w(uint64(ehdrSize))
	w(shoff)
	w(uint32(0))
	w(uint16(ehdrSize))
	w(uint16(phdrSize))
	w(uint16(2))
	w(uint16(shdrSize))
	w(uint16(len(sections)))
	w(uint16(len(sections) - 1))
	// The text segment, then the read-only one, which also maps go:func.*
	// at its fixed address.
	w(elf.Prog64{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Off: textFile, Vaddr: st.textStart, Paddr: st.textStart,
		Filesz: uint64(len(st.text)), Memsz: uint64(len(st.text)), Align: alignment})
	w(elf.Prog64{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R), Off: roFile, Vaddr: roAddr, Paddr: roAddr,
		Filesz: uint64(len(ro)), Memsz: uint64(len(ro)), Align: alignment})
	b.Write(st.text)
	b.Write(ro)
	b.Write(shstr)
	for i, s := range sections {
		w(elf.Section64{Name: names[i], Type: uint32(s.typ), Flags: uint64(s.flags), Addr: s.addr, Off: s.off, Size: uint64(len(s.data)), Addralign: 1})
	}
	return b.Bytes()
}

// The fuzz seeds hold what the real builds hold: the tiny executable gives
// the same functions, RETs and frames at every pc as the build it was cut
// from.
func TestTinyELFMatchesBuild(t *testing.T) {
	for _, tc := range []struct {
		toolchain, goarch string
		machine           elf.Machine
	}{
		{"local", "amd64", elf.EM_X86_64},
		{"local", "arm64", elf.EM_AARCH64},
		{"go1.18.10", "amd64", elf.EM_X86_64},
	} {
		t.Run(tc.toolchain+"/"+tc.goarch, func(t *testing.T) {
			tg := symtest.FindTarget(t, tc.toolchain, tc.goarch, false, true)
			real := openTarget(t, tg)
			tiny, err := NewFile(bytes.NewReader(tinyELF(mainTable(t, tg), tc.machine, real.GoVersion)))
			if err != nil {
				t.Fatal(err)
			}
			want, err := real.Funcs("main.*")
			if err != nil {
				t.Fatal(err)
			}
			got, err := tiny.Funcs("main.*")
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d functions, want %d", len(got), len(want))
			}
			inlined := 0
			for i, fn := range got {
				w := want[i]
				if fn.Name != w.Name || fn.Entry != w.Entry || fn.End != w.End {
					t.Fatalf("function %d is %+v, want %+v", i, fn, w)
				}
				gotRets, err1 := tiny.ReturnOffsets(fn)
				wantRets, err2 := real.ReturnOffsets(w)
				if err1 != nil || err2 != nil || len(gotRets) == 0 || len(gotRets) != len(wantRets) {
					t.Fatalf("%s: RETs %#x, %v; want %#x, %v", fn.Name, gotRets, err1, wantRets, err2)
				}
				for j := range gotRets {
					if gotRets[j]-fn.Offset != wantRets[j]-w.Offset {
						t.Fatalf("%s: RETs %#x, want %#x", fn.Name, gotRets, wantRets)
					}
				}
				for pc := fn.Entry; pc < fn.End; pc++ {
					g, w := tiny.Frames(pc), real.Frames(pc)
					if !slices.Equal(g, w) {
						t.Fatalf("pc %#x: frames %+v, want %+v", pc, g, w)
					}
					if len(g) > 1 {
						inlined++
					}
				}
			}
			if inlined == 0 {
				t.Error("no inlined frames: the inline trees were not carried over")
			}
		})
	}
}

package symbols

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
)

// Each parser has a fuzz target of its own, seeded with small real inputs:
// functions cut out of the test target's pclntab, with their code and their
// inline trees. Panics are not caught while fuzzing: the bounds checks, not
// the recover, must hold.
//
// The commands bound minimization by a count: by default each new input is
// minimized for up to a minute, during which the fuzzer explores nothing
// and reports 0 execs/sec; a kilobyte input easily takes that long. Go
// 1.26's coordinator can end a duration-bounded run with a spurious
// "context deadline exceeded" and no input (golang/go#75804): not a finding.

// mainTable cuts the main package's functions out of tg's pclntab.
func mainTable(tb testing.TB, tg *symtest.Target) smallTable {
	tb.Helper()
	f := openTarget(tb, tg)
	t, err := f.pcln()
	if err != nil {
		tb.Fatal(err)
	}
	first := funcIndex(tb, f, "main.(*Endpoint).regenerateBPF")
	for first > 0 && bytes.HasPrefix(t.funcName(first-1), []byte("main.")) {
		first--
	}
	n := 0
	for first+n < t.nfunc && bytes.HasPrefix(t.funcName(first+n), []byte("main.")) {
		n++
	}
	return cutPCLNTab(tb, f, first, n)
}

var seedBuilds = []struct{ name, toolchain, goarch string }{
	{"amd64", "local", "amd64"},
	{"arm64", "local", "arm64"},
	{"go1.18", "go1.18.10", "amd64"},
}

// funcTable cuts the function named name out of tg's pclntab.
func funcTable(tb testing.TB, tg *symtest.Target, name string) smallTable {
	tb.Helper()
	f := openTarget(tb, tg)
	return cutPCLNTab(tb, f, funcIndex(tb, f, name), 1)
}

// seedTables are two functions, one with an inlined call, of the local
// toolchain's amd64 and arm64 builds and of a Go 1.18 build, whose pclntab
// layout differs. Small seeds keep the minimization of each new input
// short.
func seedTables(tb testing.TB) map[string]smallTable {
	tb.Helper()
	seeds := map[string]smallTable{}
	for _, b := range seedBuilds {
		tg := symtest.FindTarget(tb, b.toolchain, b.goarch, false, true)
		seeds[b.name+"/inlined"] = funcTable(tb, tg, "main.(*Endpoint).regenerateBPF")
		seeds[b.name+"/recursive"] = funcTable(tb, tg, "main.recurse")
	}
	return seeds
}

func uncaught(f *testing.F) {
	catchPanics = false
	f.Cleanup(func() { catchPanics = true })
}

// FuzzNewFile is the glue: a whole executable through NewFile, Funcs,
// ReturnOffsets, Frames and Fingerprint. The seeds are tiny
// stripped executables (tinyELF) holding the main package of real builds,
// whose text start comes from the moduledata.
//
//	go test -run '^$' -fuzz '^FuzzNewFile$' -fuzztime 10m -fuzzminimizetime 1000x ./pkg/symbols
func FuzzNewFile(f *testing.F) {
	for name, st := range seedTables(f) {
		machine := elf.EM_X86_64
		if strings.HasPrefix(name, "arm64/") {
			machine = elf.EM_AARCH64
		}
		f.Add(tinyELF(st, machine, "go1.26.8"))
	}
	uncaught(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := NewFile(bytes.NewReader(data))
		if err != nil {
			symtest.OneLine(t, err)
			return
		}
		if _, err := file.Fingerprint(); err != nil {
			symtest.OneLine(t, err)
		}
		if _, err := file.Strings("runtime.waitReasonStrings"); err != nil {
			symtest.OneLine(t, err)
		}
		fns, err := file.Funcs("*")
		if err != nil {
			symtest.OneLine(t, err)
			return
		}
		budget := 512 // pcs symbolized per input
		for i, fn := range fns {
			if i == 32 {
				break
			}
			if i > 0 && fn.Entry < fns[i-1].Entry {
				t.Fatalf("functions out of order: %s at %#x after %#x", fn.Name, fn.Entry, fns[i-1].Entry)
			}
			offs, err := file.ReturnOffsets(fn)
			if err != nil {
				symtest.OneLine(t, err)
			}
			for j, off := range offs {
				if off < fn.Offset || off-fn.Offset >= fn.End-fn.Entry || j > 0 && off <= offs[j-1] {
					t.Fatalf("%s [%#x, %#x) at file offset %#x: RET offsets %#x", fn.Name, fn.Entry, fn.End, fn.Offset, offs)
				}
			}
			for pc := fn.Entry; pc < fn.End && budget > 0; pc, budget = pc+1, budget-1 {
				checkFrames(t, file.Frames(pc), pc)
				file.SPDelta(pc)
			}
		}
	})
}

// checkFrames checks the shape of a symbolized pc: inlined frames first, the
// physical function last.
func checkFrames(t *testing.T, frames []Frame, pc uint64) {
	t.Helper()
	if len(frames) > maxInlineDepth+1 {
		t.Fatalf("pc %#x: %d frames", pc, len(frames))
	}
	for i, fr := range frames {
		if fr.PC != pc || fr.Inlined != (i < len(frames)-1) {
			t.Fatalf("pc %#x: frame %d of %d is %+v", pc, i, len(frames), fr)
		}
	}
}

// FuzzPCLNTab parses a pclntab header and walks its function table:
// names, records, code ends and the pc search. textStart stands for the
// moduledata's text field, which Go 1.26 tables need.
//
//	go test -run '^$' -fuzz '^FuzzPCLNTab$' -fuzztime 10m -fuzzminimizetime 1000x ./pkg/symbols
func FuzzPCLNTab(f *testing.F) {
	for _, st := range seedTables(f) {
		f.Add(st.pclntab, st.textStart)
		// As Go 1.18 to 1.25 write it: the text start in the header.
		withText := bytes.Clone(st.pclntab)
		binary.LittleEndian.PutUint64(withText[8+8*2:], st.textStart)
		f.Add(withText, uint64(0))
	}
	uncaught(f)
	f.Fuzz(func(t *testing.T, data []byte, textStart uint64) {
		tab, headerText, err := parsePCLNTab(data)
		if err != nil {
			symtest.OneLine(t, err)
			return
		}
		tab.textStart = textStart
		if headerText != 0 {
			tab.textStart = headerText
		}
		// As loadPCLNTab, with a text segment spanning the address space.
		if !tab.within(0, ^uint64(0)) {
			return
		}
		sorted := true
		for i := range tab.nfunc {
			sorted = sorted && tab.entryOff(i) <= tab.entryOff(i+1)
		}
		for i := range min(tab.nfunc, 1024) {
			entry, next := tab.entry(i), tab.entry(i+1)
			if end := tab.codeEnd(i); end != next && (end <= entry || end > next) {
				t.Fatalf("function %d [%#x, %#x): code end %#x", i, entry, next, end)
			}
			tab.funcName(i)
			if r, ok := tab.record(i); ok {
				r.funcID()
				r.flag()
				for j := range uint8(8) {
					r.funcdata(j)
					r.pcdata(uint32(j))
				}
				if uint64(len(r.b)) < r.hdr {
					t.Fatalf("function %d: record of %d bytes", i, len(r.b))
				}
				tab.file(r.word(funcCUOffset), 0)
			}
			if !sorted || entry >= next {
				continue
			}
			for _, pc := range []uint64{entry, next - 1} {
				if j, ok := tab.find(pc); !ok || tab.entryOff(j) != tab.entryOff(i) {
					t.Fatalf("find(%#x) = %d, %v; want function %d [%#x, %#x)", pc, j, ok, i, entry, next)
				}
			}
		}
		if sorted {
			if _, ok := tab.find(tab.entry(tab.nfunc)); ok {
				t.Fatalf("find(%#x) past the last function succeeded", tab.entry(tab.nfunc))
			}
		}
	})
}

// FuzzPCValue decodes one pc-value table: its ranges must follow each other
// without gaps or wrapping, and pcvalue must agree with them.
//
//	go test -run '^$' -fuzz '^FuzzPCValue$' -fuzztime 10m -fuzzminimizetime 1000x ./pkg/symbols
func FuzzPCValue(f *testing.F) {
	for _, st := range seedTables(f) {
		tab, _, err := parsePCLNTab(st.pclntab)
		if err != nil {
			f.Fatal(err)
		}
		tab.textStart = st.textStart
		for i := range tab.nfunc {
			r, _ := tab.record(i)
			for _, off := range []uint32{r.word(funcPCSP), r.word(funcPCFile), r.word(funcPCLn), r.pcdata(pcdataInlTree)} {
				if off != 0 {
					f.Add(tab.pctab[off:], uint8(tab.quantum), r.entry)
				}
			}
		}
	}
	uncaught(f)
	f.Fuzz(func(t *testing.T, table []byte, quantum uint8, entry uint64) {
		q := uint64(1) << (quantum % 3)
		tab := &pclntab{pctab: append([]byte{0}, table...), quantum: q}
		it := tab.pcIter(1, entry)
		for n := 0; it.next(); n++ {
			if it.start < entry || it.end < it.start || n == 0 && it.start != entry {
				t.Fatalf("range %d [%#x, %#x) from entry %#x", n, it.start, it.end, entry)
			}
			if n >= 64 || it.end == it.start {
				continue
			}
			for _, pc := range []uint64{it.start, it.end - 1} {
				if v, ok := tab.pcvalue(1, entry, pc); !ok || v != it.val {
					t.Fatalf("pcvalue(%#x) = %d, %v; range %d [%#x, %#x) has %d", pc, v, ok, n, it.start, it.end, it.val)
				}
			}
		}
		if it.end > entry {
			if v, ok := tab.pcvalue(1, entry, it.end); ok {
				t.Fatalf("pcvalue(%#x) = %d past the table's end", it.end, v)
			}
		}
	})
}

// FuzzFrames symbolizes every pc of a pclntab's first functions, with their
// inline trees in go:func.*: the inline-tree walk and the line, file and
// inline-index tables.
//
//	go test -run '^$' -fuzz '^FuzzFrames$' -fuzztime 10m -fuzzminimizetime 1000x ./pkg/symbols
func FuzzFrames(f *testing.F) {
	for _, st := range seedTables(f) {
		f.Add(st.pclntab, st.textStart, st.gofunc)
	}
	uncaught(f)
	f.Fuzz(func(t *testing.T, data []byte, textStart uint64, gofunc []byte) {
		tab, headerText, err := parsePCLNTab(data)
		if err != nil {
			return
		}
		tab.textStart = textStart
		if headerText != 0 {
			tab.textStart = headerText
		}
		if !tab.within(0, ^uint64(0)) {
			return
		}
		const base = 0x7f0000
		gofuncAddr := func() (uint64, bool) { return base, true }
		read := func(v, n uint64) ([]byte, error) {
			if v < base || v-base > uint64(len(gofunc)) || n > uint64(len(gofunc))-(v-base) {
				return nil, errOutside
			}
			return gofunc[v-base : v-base+n], nil
		}
		budget := 1024
		for i := 0; i < tab.nfunc && budget > 0; i++ {
			entry, end := tab.entry(i), tab.codeEnd(i)
			for pc := entry; pc < end && budget > 0; pc, budget = pc+1, budget-1 {
				frames := tab.frames(pc, gofuncAddr, read)
				checkFrames(t, frames, pc)
				if len(frames) == 0 {
					continue
				}
				j, _ := tab.find(pc)
				if got, want := frames[len(frames)-1].Func, string(tab.funcName(j)); got != want {
					t.Fatalf("pc %#x: physical frame %q, function %d is %q", pc, got, j, want)
				}
			}
		}
	})
}

var errOutside = errors.New("outside go:func.*")

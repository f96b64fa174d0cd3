package symbols

import (
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/symbols/disasm"
)

// A run of a crafted pc-value table: n bytes of code with value val.
type run struct {
	n   uint64
	val int32
}

// craftTable returns a pclntab holding one function of size bytes at entry
// with the given pcsp and pcfile tables; a nil table is absent.
func craftTable(entry, size, quantum uint64, pcsp, pcfile []run) *pclntab {
	pctab := []byte{0} // offset 0 means no table
	encode := func(runs []run) uint32 {
		if runs == nil {
			return 0
		}
		off := uint32(len(pctab))
		prev := int32(-1)
		for _, r := range runs {
			d := r.val - prev
			uv := uint64(d) << 1
			if d < 0 {
				uv = uint64(-d-1)<<1 | 1
			}
			pctab = binary.AppendUvarint(pctab, uv)
			pctab = binary.AppendUvarint(pctab, r.n/quantum)
			prev = r.val
		}
		pctab = append(pctab, 0)
		return off
	}
	spOff, fileOff := encode(pcsp), encode(pcfile)
	// The function table (entry and record offsets, then the end), then
	// the record: a Go 1.20+ _func with no pcdata or funcdata.
	funcs := make([]byte, 12+funcHeaderSize)
	binary.LittleEndian.PutUint32(funcs[4:], 12)
	binary.LittleEndian.PutUint32(funcs[8:], uint32(size))
	rec := funcs[12:]
	binary.LittleEndian.PutUint32(rec[funcPCSP:], spOff)
	binary.LittleEndian.PutUint32(rec[funcPCFile:], fileOff)
	return &pclntab{magic: go120Magic, quantum: quantum, nfunc: 1, textStart: entry,
		funcnames: []byte("f\x00"), pctab: pctab, funcs: funcs}
}

func words(ws ...uint32) []byte {
	var b []byte
	for _, w := range ws {
		b = binary.LittleEndian.AppendUint32(b, w)
	}
	return b
}

// Crafted bodies and tables: a RET the disassembler finds must be where the
// pcsp table says the frame is popped, and both tables may change value only
// where an instruction starts.
func TestCheckFramesCrafted(t *testing.T) {
	const (
		entry = 0x401000
		start = 0x1000 // file offset of entry
	)
	// amd64: SUBQ $16, SP; ADDQ $16, SP; RET
	x86 := []byte{0x48, 0x83, 0xec, 0x10, 0x48, 0x83, 0xc4, 0x10, 0xc3}
	// arm64: SUB $16, RSP; ADD $16, RSP; RET; then a word of data where
	// the frame is held, as in a literal pool, that decodes as RET.
	const sub, add, ret, nop = 0xd10043ff, 0x910043ff, 0xd65f03c0, 0xd503201f
	for _, tc := range []struct {
		name         string
		arch         string
		code         []byte
		pcsp, pcfile []run
		rets         []uint64 // file offsets; nil: refused
		at           uint64   // file offset of the refusal
		reason       string
	}{
		{name: "amd64 ok", arch: "amd64", code: x86,
			pcsp: []run{{4, 0}, {4, 16}, {1, 0}}, pcfile: []run{{9, 1}}, rets: []uint64{start + 8}},
		{name: "amd64 RET in frame", arch: "amd64", code: x86,
			pcsp: []run{{4, 0}, {5, 16}}, pcfile: []run{{9, 1}}, at: start + 8, reason: "frame is not popped (SP delta 16)"},
		{name: "amd64 pcsp inside instruction", arch: "amd64", code: x86,
			pcsp: []run{{2, 0}, {6, 16}, {1, 0}}, pcfile: []run{{9, 1}}, at: start + 2, reason: "pcsp table changes inside an instruction"},
		{name: "amd64 pcfile inside instruction", arch: "amd64", code: x86,
			pcsp: []run{{4, 0}, {4, 16}, {1, 0}}, pcfile: []run{{5, 1}, {4, 2}}, at: start + 5, reason: "pcfile table changes inside an instruction"},
		{name: "amd64 pcsp ends inside instruction", arch: "amd64", code: x86,
			pcsp: []run{{4, 0}, {3, 16}}, pcfile: []run{{9, 1}}, at: start + 7, reason: "pcsp table changes inside an instruction"},
		{name: "amd64 RET past the pcsp table", arch: "amd64", code: x86,
			pcsp: []run{{4, 0}, {4, 16}}, pcfile: []run{{9, 1}}, at: start + 8, reason: "RET outside the pcsp table"},
		{name: "amd64 pcsp past the end", arch: "amd64", code: x86,
			pcsp: []run{{4, 0}, {4, 16}, {4, 0}}, pcfile: []run{{9, 1}}, at: start, reason: "runs past the function's end"},
		{name: "amd64 no pcsp", arch: "amd64", code: x86,
			pcfile: []run{{9, 1}}, at: start, reason: "pcsp table: missing"},
		{name: "arm64 ok", arch: "arm64", code: words(sub, add, ret, nop),
			pcsp: []run{{4, 0}, {4, 16}, {4, 0}, {4, 16}}, pcfile: []run{{16, 1}}, rets: []uint64{start + 8}},
		{name: "arm64 literal pool RET", arch: "arm64", code: words(sub, add, ret, ret),
			pcsp: []run{{4, 0}, {4, 16}, {4, 0}, {4, 16}}, pcfile: []run{{16, 1}}, at: start + 12, reason: "frame is not popped (SP delta 16)"},
	} {
		fn := Func{Name: "f", Entry: entry, End: entry + uint64(len(tc.code)), Offset: start}
		tab := craftTable(entry, uint64(len(tc.code)), map[string]uint64{"amd64": 1, "arm64": 4}[tc.arch], tc.pcsp, tc.pcfile)
		b, err := disasm.Decode(tc.arch, fn.Name, fn.Entry, start, tc.code)
		if err != nil {
			t.Fatalf("%s: decode: %v", tc.name, err)
		}
		err = tab.checkFrames(fn, b)
		if tc.rets != nil {
			if err != nil || !slices.Equal(b.Rets, tc.rets) {
				t.Errorf("%s: RETs %#x, %v; want %#x", tc.name, b.Rets, err, tc.rets)
			}
			continue
		}
		var fe *FrameError
		if !errors.As(err, &fe) || fe.Offset != tc.at || !strings.Contains(fe.Reason, tc.reason) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v; want a *FrameError at %#x: %s", tc.name, err, tc.at, tc.reason)
		}
	}
}

// Builds of the example agent the checks run on.
var agentVariants = []testagent.Variant{
	{}, {Stripped: true}, {GOARCH: "arm64"}, {GOARCH: "arm64", Stripped: true},
	{Toolchain: "go1.22.12"}, {Toolchain: "go1.22.12", GOARCH: "arm64", Stripped: true},
}

// Every function compiled from Go in the example agent and in a large
// binary agrees with its pc tables; only hand-written assembly may not
// (arm64's runtime.asyncPreempt pops the signal handler's 16 bytes too).
func TestCheckFramesRealBinaries(t *testing.T) {
	bins := map[string]string{"big": benchBinary(t)}
	for _, v := range agentVariants {
		bins["agent "+v.String()] = testagent.Build(t, v)
	}
	for name, path := range bins {
		f, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fns, err := f.Funcs("*")
		if err != nil {
			t.Fatal(err)
		}
		checked, rets := 0, 0
		for _, fn := range fns {
			offs, err := f.ReturnOffsets(fn)
			var fe *FrameError
			if errors.As(err, &fe) {
				fr := f.Frames(fn.Entry)
				asm := len(fr) > 0 && strings.HasSuffix(fr[len(fr)-1].File, ".s")
				if !asm && !strings.HasPrefix(fn.Name, "go:") {
					t.Errorf("%s: %v", name, err)
				} else {
					t.Logf("%s: refused: %v", name, err)
				}
			}
			if err == nil {
				checked++
				rets += len(offs)
			}
		}
		t.Logf("%s: %d of %d functions, %d RETs agree with their pc tables", name, checked, len(fns), rets)
		if checked < len(fns)*9/10 {
			t.Errorf("%s: only %d of %d functions checked", name, checked, len(fns))
		}
	}
}

// A method promoted through an embedded pointer has a compiler-generated
// wrapper ending in a jump to the method (since Go 1.24): refused with the
// method to trace instead, which resolves.
func TestTailCall(t *testing.T) {
	const (
		wrapper = "github.com/cilium/cilium/pkg/policy.(*cachedSelectorPolicy).DistillPolicy"
		callee  = "github.com/cilium/cilium/pkg/policy.(*selectorPolicy).DistillPolicy"
	)
	for _, v := range agentVariants {
		f, err := Open(testagent.Build(t, v))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fns, err := f.Funcs(wrapper)
		if err != nil {
			t.Fatalf("%v: %v", v, err)
		}
		offs, err := f.ReturnOffsets(fns[0])
		var nr *NoReturnError
		if v.Toolchain == "go1.22.12" {
			// Go 1.22's wrappers call the method and return.
			if err != nil || len(offs) == 0 {
				t.Errorf("%v: %v, %v", v, offs, err)
			}
		} else if !errors.As(err, &nr) || !slices.Equal(nr.TailCalls, []string{callee}) ||
			!strings.Contains(err.Error(), "tail call to "+callee+"; trace "+callee+" instead") {
			t.Errorf("%v: %v; want a tail call to %s", v, err, callee)
		}
		fns, err = f.Funcs(callee)
		if err != nil {
			t.Fatalf("%v: %v", v, err)
		}
		if offs, err := f.ReturnOffsets(fns[0]); err != nil || len(offs) == 0 {
			t.Errorf("%v: %s: %v, %v", v, callee, offs, err)
		}
		// A function that loops forever jumps nowhere.
		fns, err = f.Funcs("runtime.sysmon")
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.ReturnOffsets(fns[0])
		if !errors.As(err, &nr) || len(nr.TailCalls) != 0 || !strings.HasSuffix(err.Error(), "no RET instruction (the function never returns)") {
			t.Errorf("%v: runtime.sysmon: %v", v, err)
		}
	}
}

// What the check adds to finding the RETs, per function of a large binary:
// decoding the body, then checking it against the pc tables.
func BenchmarkReturnOffsets(b *testing.B) {
	f, err := Open(benchBinary(b))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fns, err := f.Funcs("*")
	if err != nil {
		b.Fatal(err)
	}
	t, err := f.pcln()
	if err != nil {
		b.Fatal(err)
	}
	var (
		decoded []Func
		bodies  []*disasm.Body
	)
	for _, fn := range fns {
		if body, err := f.decode(fn); err == nil {
			decoded = append(decoded, fn)
			bodies = append(bodies, body)
		}
	}
	perFunc := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(decoded)), "ns/func")
	}
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			for _, fn := range decoded {
				f.decode(fn)
			}
		}
		perFunc(b)
	})
	b.Run("check", func(b *testing.B) {
		for b.Loop() {
			for i, fn := range decoded {
				t.checkFrames(fn, bodies[i])
			}
		}
		perFunc(b)
	})
}

// FuzzCheckFrames feeds a function body and raw pcsp and pcfile tables
// through the decoder and the check: tables from an untrusted binary must
// give an error, never a panic or a hang.
//
//	go test -run '^$' -fuzz FuzzCheckFrames -fuzztime 60s ./pkg/symbols
func FuzzCheckFrames(f *testing.F) {
	x86 := []byte{0x48, 0x83, 0xec, 0x10, 0x48, 0x83, 0xc4, 0x10, 0xc3}
	sp := craftTable(0, 9, 1, []run{{4, 0}, {4, 16}, {1, 0}}, []run{{9, 1}})
	f.Add(false, x86, sp.pctab, uint32(1), uint32(8))
	arm := words(0xd10043ff, 0x910043ff, 0xd65f03c0, 0xd65f03c0)
	sp = craftTable(0, 16, 4, []run{{4, 0}, {4, 16}, {4, 0}, {4, 16}}, []run{{16, 1}})
	f.Add(true, arm, sp.pctab, uint32(1), uint32(10))
	f.Fuzz(func(t *testing.T, arm64 bool, code, pctab []byte, spOff, fileOff uint32) {
		const entry, start = 0x401000, 0x1000
		arch, quantum := "amd64", uint64(1)
		if arm64 {
			arch, quantum = "arm64", 4
		}
		if len(code) == 0 {
			return
		}
		fn := Func{Name: "f", Entry: entry, End: entry + uint64(len(code)), Offset: start}
		tab := craftTable(entry, uint64(len(code)), quantum, nil, nil)
		tab.pctab = pctab
		rec := tab.funcs[12:]
		binary.LittleEndian.PutUint32(rec[funcPCSP:], spOff)
		binary.LittleEndian.PutUint32(rec[funcPCFile:], fileOff)
		b, err := disasm.Decode(arch, fn.Name, fn.Entry, start, code)
		if err != nil {
			return
		}
		if err := tab.checkFrames(fn, b); err == nil {
			for _, r := range b.Rets {
				if !b.Boundary(r - start) {
					t.Fatalf("RET at %#x off an instruction boundary", r)
				}
			}
		}
		tab.noReturn(fn, b)
	})
}

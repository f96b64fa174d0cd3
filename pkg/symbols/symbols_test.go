package symbols

import (
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/symbols/disasm"
	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
)

func TestOpen(t *testing.T) {
	for _, tg := range symtest.Targets(t) {
		f := openTarget(t, tg)
		if f.GoVersion != tg.GoVersion() {
			t.Errorf("%s: GoVersion %q, want %q", tg, f.GoVersion, tg.GoVersion())
		}
		if f.Arch != tg.GOARCH || f.PIE != tg.PIE || f.Stripped != tg.Stripped || f.HasDWARF == tg.Stripped {
			t.Errorf("%s: Arch %s PIE %v Stripped %v HasDWARF %v", tg, f.Arch, f.PIE, f.Stripped, f.HasDWARF)
		}
		out, err := exec.Command("go", "tool", "buildid", tg.Path).Output()
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.TrimSpace(string(out)); f.BuildID != want {
			t.Errorf("%s: BuildID %q, want %q", tg, f.BuildID, want)
		}
	}
}

// textOffset converts a virtual address to a file offset through the .text
// section, independently of the package's own segment arithmetic.
func textOffset(t *testing.T, path string, v uint64) uint64 {
	t.Helper()
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	s := ef.Section(".text")
	if v < s.Addr || v >= s.Addr+s.Size {
		t.Fatalf("%#x outside .text", v)
	}
	return v - s.Addr + s.Offset
}

func TestFuncs(t *testing.T) {
	for _, tg := range symtest.Targets(t) {
		f := openTarget(t, tg)
		for _, tc := range []struct{ pattern, want string }{
			{"main.(*Endpoint).regenerateBPF", "main.(*Endpoint).regenerateBPF"},
			{"main.(*Endpoint).*", "main.(*Endpoint).regenerateBPF"},
			{"main.(*Endpoint).regenerate*", "main.(*Endpoint).regenerateBPF"},
			{"main.rec?rse", "main.recurse"},
			{"main.Endpoint.Name", "main.Endpoint.Name"},
			{"*.Endpoint.Na*", "main.Endpoint.Name"},
		} {
			fns, err := f.Funcs(tc.pattern)
			if err != nil {
				t.Errorf("%s: Funcs(%q): %v", tg, tc.pattern, err)
				continue
			}
			if len(fns) != 1 || fns[0].Name != tc.want {
				t.Errorf("%s: Funcs(%q) = %v, want %s", tg, tc.pattern, fns, tc.want)
				continue
			}
			fn := fns[0]
			if fn.End <= fn.Entry || fn.End-fn.Entry > 4096 {
				t.Errorf("%s: %s bounds [%#x, %#x)", tg, fn.Name, fn.Entry, fn.End)
			}
			if want := textOffset(t, tg.Path, fn.Entry); fn.Offset != want {
				t.Errorf("%s: %s Offset %#x, want %#x", tg, fn.Name, fn.Offset, want)
			}
		}
		all, err := f.Funcs("*")
		if err != nil {
			t.Fatal(err)
		}
		if len(all) < 1000 {
			t.Errorf("%s: only %d functions", tg, len(all))
		}
		for i := 1; i < len(all); i++ {
			if all[i].Entry <= all[i-1].Entry {
				t.Fatalf("%s: functions not ordered by address / duplicated: %v, %v", tg, all[i-1], all[i])
			}
		}
	}
}

// Stripping must not change what Funcs reports: the .symtab of a build and
// its .gopclntab give the same functions, and so does the .gopclntab of the
// same build stripped (internal linking lays out stripped builds
// identically; the external linker does not).
func TestFuncsSymtabMatchesPCLNTab(t *testing.T) {
	for _, tg := range symtest.Targets(t) {
		if tg.Stripped {
			continue
		}
		f := openTarget(t, tg)
		fromSymtab, err := f.Funcs("*")
		if err != nil {
			t.Fatal(err)
		}
		fromPCLN, err := f.pclnFuncs(compilePattern("*"))
		if err != nil {
			t.Fatal(err)
		}
		if s := symtest.StrippedSibling(t, tg); s != nil && !tg.External {
			fromStripped, err := openTarget(t, s).Funcs("*")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(fromStripped, fromPCLN) {
				t.Errorf("%s: the stripped build has other functions", tg)
			}
		}
		byEntry := make(map[uint64]Func)
		for _, fn := range fromPCLN {
			byEntry[fn.Entry] = fn
		}
		abi0, seen := 0, 0
		for _, want := range fromSymtab {
			got, ok := byEntry[want.Entry]
			if !ok && tg.External {
				continue // C code
			}
			seen++
			// The symbol table spells the compiler's "·" as ".".
			got.Name = strings.ReplaceAll(got.Name, "·", ".")
			if slices.Contains(symtest.OldToolchains, tg.Toolchain) {
				// Before Go 1.21 the pclntab elides bracketed type
				// arguments and array lengths.
				want.Name = elideBrackets(want.Name)
			}
			// Marker symbols (go:textfipsstart) have size 1 in .symtab.
			if want.End-want.Entry <= 1 {
				got.End = want.End
			}
			if !ok || got != want {
				t.Errorf("%s: .symtab %+v, .gopclntab %+v", tg, want, got)
			}
			if strings.HasSuffix(want.Name, ".abi0") {
				abi0++
			}
		}
		if seen != len(fromPCLN) {
			t.Errorf("%s: %d functions from .symtab, %d from .gopclntab", tg, seen, len(fromPCLN))
		}
		if abi0 == 0 {
			t.Errorf("%s: no function has both ABI0 and ABIInternal bodies", tg)
		}
	}
}

// elideBrackets replaces the contents of top-level brackets with "...".
func elideBrackets(name string) string {
	var b strings.Builder
	depth := 0
	for _, r := range name {
		switch {
		case r == '[':
			if depth == 0 {
				b.WriteString("[...")
			}
			depth++
		case r == ']' && depth > 0:
			depth--
			if depth == 0 {
				b.WriteByte(']')
			}
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// objdumpRets returns the addresses of the RET instructions of every function
// as a disassembler that knows every instruction sees them, keyed by function
// entry: binutils' objdump for amd64 (x86asm, which `go tool objdump` also
// uses, is what is under test), `go tool objdump` for arm64, which the
// installed binutils cannot disassemble.
func objdumpRets(t *testing.T, tg *symtest.Target) map[uint64][]uint64 {
	t.Helper()
	rets := make(map[uint64][]uint64)
	var entry uint64
	if tg.GOARCH == "amd64" {
		out, err := exec.Command("objdump", "-d", "-w", tg.Path).Output()
		if err != nil {
			t.Fatalf("binutils objdump: %v", err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasSuffix(line, ">:") {
				v, err := strconv.ParseUint(strings.Fields(line)[0], 16, 64)
				if err == nil {
					entry = v
					rets[entry] = nil
				}
				continue
			}
			cols := strings.Split(line, "\t")
			if len(cols) < 3 || !strings.HasSuffix(cols[0], ":") {
				continue
			}
			addr, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(cols[0], ":")), 16, 64)
			if err != nil {
				continue
			}
			if op := strings.Fields(cols[2]); len(op) > 0 && (op[0] == "ret" || op[0] == "retq") {
				rets[entry] = append(rets[entry], addr)
			}
		}
		return rets
	}
	out, err := exec.Command("go", "tool", "objdump", tg.Path).Output()
	if err != nil {
		t.Fatal(err)
	}
	newFunc := false
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "TEXT ") {
			newFunc = true
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 4 || !strings.HasPrefix(fields[1], "0x") {
			continue
		}
		addr, err := strconv.ParseUint(fields[1][2:], 16, 64)
		if err != nil {
			continue
		}
		if newFunc {
			entry, newFunc = addr, false
			rets[entry] = nil
		}
		if fields[3] == "RET" {
			rets[entry] = append(rets[entry], addr)
		}
	}
	return rets
}

func TestReturnOffsetsMatchObjdump(t *testing.T) {
	for _, tg := range symtest.Targets(t) {
		if tg.Stripped || (tg.Toolchain != "local" && tg.Toolchain != "go1.22.12") {
			continue
		}
		f := openTarget(t, tg)
		rets := objdumpRets(t, tg)
		fns, err := f.Funcs("*")
		if err != nil {
			t.Fatal(err)
		}
		refused := 0
		for _, fn := range fns {
			offs, err := f.ReturnOffsets(fn)
			want, ok := rets[fn.Entry]
			var (
				de *disasm.DecodeError
				fe *FrameError
				nr *NoReturnError
			)
			switch {
			case errors.As(err, &nr):
				if len(want) > 0 {
					t.Errorf("%s: %s: %v; objdump finds RETs at %#x", tg, fn.Name, err, want)
				}
				continue
			case err != nil:
				// Only hand-written assembly may use instructions the
				// disassembler does not know or keep a frame of its own
				// at a RET (arm64's asyncPreempt returns to the
				// interrupted pc); compiled Go must decode and agree with
				// its pc tables. C code has no pc tables.
				fr := f.Frames(fn.Entry)
				asm := len(fr) > 0 && strings.HasSuffix(fr[len(fr)-1].File, ".s")
				marker := strings.HasPrefix(fn.Name, "go:") // go:textfipsstart
				c := tg.External && len(fr) == 0
				if !(errors.As(err, &de) || errors.As(err, &fe)) || !(asm || marker || c) {
					t.Errorf("%s: %s refused: %v", tg, fn.Name, err)
				}
				if !c {
					refused++
				}
				continue
			}
			if !ok {
				continue // objdump skips marker symbols
			}
			got := make([]uint64, len(offs))
			for i, off := range offs {
				got[i] = off - fn.Offset + fn.Entry
			}
			if len(want) != len(got) || (len(want) > 0 && !reflect.DeepEqual(got, want)) {
				t.Errorf("%s: %s RETs at %#x, objdump %#x", tg, fn.Name, got, want)
			}
		}
		if refused > len(fns)/50 {
			t.Errorf("%s: %d of %d functions refused", tg, refused, len(fns))
		}
		// The stripped build must give the same offsets for the user code.
		if tg.External {
			continue // the external linker lays stripped builds out differently
		}
		sf := openTarget(t, symtest.StrippedSibling(t, tg))
		for _, name := range []string{"main.(*Endpoint).regenerateBPF", "main.recurse", "main.Endpoint.Name"} {
			a := retOffsets(t, f, name)
			b := retOffsets(t, sf, name)
			if len(a) == 0 || !reflect.DeepEqual(a, b) {
				t.Errorf("%s: %s RET offsets %#x unstripped, %#x stripped", tg, name, a, b)
			}
		}
	}
}

func retOffsets(t *testing.T, f *File, name string) []uint64 {
	t.Helper()
	fns, err := f.Funcs(name)
	if err != nil {
		t.Fatal(err)
	}
	offs, err := f.ReturnOffsets(fns[0])
	if err != nil {
		t.Fatal(err)
	}
	return offs
}

// Every build, including the arm64 ones that cannot run here, symbolizes the
// inlined call of step inside regenerateBPF.
func TestFramesInlined(t *testing.T) {
	callLine := symtest.SourceLine(t, "total += e.step(i)")
	stepStart, stepEnd := symtest.SourceLine(t, "func (e *Endpoint) step"), symtest.SourceLine(t, "return e.n * 3")
	for _, tg := range symtest.Targets(t) {
		f := openTarget(t, tg)
		fns, err := f.Funcs("main.(*Endpoint).regenerateBPF")
		if err != nil {
			t.Fatal(err)
		}
		inlined := 0
		for pc := fns[0].Entry; pc < fns[0].End; pc++ {
			fr := f.Frames(pc)
			if len(fr) == 0 || fr[len(fr)-1].Func != "main.(*Endpoint).regenerateBPF" || fr[len(fr)-1].Inlined {
				t.Fatalf("%s: Frames(%#x) = %+v", tg, pc, fr)
			}
			if len(fr) == 1 {
				continue
			}
			inlined++
			if len(fr) != 2 || fr[0].Func != "main.(*Endpoint).step" || !fr[0].Inlined ||
				fr[0].Line < stepStart || fr[0].Line > stepEnd || fr[1].Line != callLine {
				t.Errorf("%s: Frames(%#x) = %+v", tg, pc, fr)
			}
		}
		if inlined == 0 {
			t.Errorf("%s: no PC of regenerateBPF is in the inlined step", tg)
		}
	}
}

func TestFramesOutsideText(t *testing.T) {
	f := openTarget(t, symtest.FindTarget(t, "local", "amd64", false, true))
	for _, pc := range []uint64{0, 1, f.text.Vaddr - 1, 1 << 62} {
		if fr := f.Frames(pc); fr != nil {
			t.Errorf("Frames(%#x) = %v, want nil", pc, fr)
		}
	}
	fns, err := f.Funcs("main.recurse")
	if err != nil {
		t.Fatal(err)
	}
	fr := f.Frames(fns[0].Entry)
	if len(fr) != 1 || fr[0].Func != "main.recurse" || fr[0].Inlined || fr[0].Line == 0 {
		t.Errorf("Frames(entry of main.recurse) = %+v", fr)
	}
	// Alignment padding after the last instruction belongs to no function.
	if fr := f.Frames(fns[0].End); fr != nil && fr[0].Func == "main.recurse" {
		t.Errorf("Frames(end of main.recurse) = %+v", fr)
	}
	if fr := f.Frames(fns[0].End - 1); len(fr) != 1 || fr[0].Func != "main.recurse" {
		t.Errorf("Frames(last byte of main.recurse) = %+v", fr)
	}
}

func TestNoMatch(t *testing.T) {
	for _, stripped := range []bool{false, true} {
		f := openTarget(t, symtest.FindTarget(t, "local", "amd64", false, stripped))
		_, err := f.Funcs("main.(*Endpoint).regenerateBFP")
		var nm *NoMatchError
		if !errors.As(err, &nm) {
			t.Fatalf("Funcs: %v, want *NoMatchError", err)
		}
		if len(nm.Closest) != 5 || nm.Closest[0] != "main.(*Endpoint).regenerateBPF" {
			t.Errorf("closest: %q", nm.Closest)
		}
		if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "regenerateBFP") || !strings.Contains(msg, nm.Closest[4]) {
			t.Errorf("error message: %q", msg)
		}
		if _, err := f.Funcs("main.(*Endpoint).regenerateBPF*x"); !errors.As(err, &nm) {
			t.Errorf("glob without match: %v", err)
		}
		// A partial name with a typo still finds its function.
		if _, err := f.Funcs("regenrateBPF"); !errors.As(err, &nm) || len(nm.Closest) == 0 || nm.Closest[0] != "main.(*Endpoint).regenerateBPF" {
			t.Errorf("partial name: %v", err)
		}
	}
}

func TestBadInput(t *testing.T) {
	// The bounds checks, not the last-resort recover, must hold.
	catchPanics = false
	defer func() { catchPanics = true }()
	dir := t.TempDir()
	text := filepath.Join(dir, "text")
	if err := os.WriteFile(text, []byte("#!/bin/sh\necho hello\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(text); !errors.Is(err, ErrNotELF) {
		t.Errorf("Open(shell script): %v, want ErrNotELF", err)
	}
	if _, err := Open(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open(missing): %v", err)
	}
	// A C program: the test machine's own /bin/true.
	if _, err := Open("/bin/true"); !errors.Is(err, ErrNotGo) {
		t.Errorf("Open(/bin/true): %v, want ErrNotGo", err)
	}

	tg := symtest.FindTarget(t, "local", "amd64", false, true)
	good, err := os.ReadFile(tg.Path)
	if err != nil {
		t.Fatal(err)
	}
	ef, err := elf.Open(tg.Path)
	if err != nil {
		t.Fatal(err)
	}
	pcln := ef.Section(".gopclntab")
	ef.Close()

	corrupt := func(name string, edit func([]byte) []byte) string {
		b := edit(append([]byte(nil), good...))
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for name, edit := range map[string]func([]byte) []byte{
		"truncated":   func(b []byte) []byte { return b[:len(b)/3] },
		"bad-magic":   func(b []byte) []byte { b[pcln.Offset] ^= 0xff; return b },
		"bad-nfunc":   func(b []byte) []byte { b[pcln.Offset+8+7] = 0x7f; return b },
		"bad-offsets": func(b []byte) []byte { copy(b[pcln.Offset+8+3*8:], []byte{1, 2, 3, 4, 5, 6, 7, 8}); return b },
		"bad-ftab": func(b []byte) []byte {
			for i := uint64(0); i < 4096; i++ {
				b[pcln.Offset+pcln.Size/2+i] = byte(i * 7)
			}
			return b
		},
	} {
		f, err := Open(corrupt(name, edit))
		if err != nil {
			continue
		}
		fns, err := f.Funcs("main.*")
		for _, fn := range fns {
			f.ReturnOffsets(fn)
			f.Frames(fn.Entry + 5)
		}
		if name != "bad-ftab" && err == nil {
			t.Errorf("%s: Funcs succeeded", name)
		}
		f.Close()
	}

}

func TestClosed(t *testing.T) {
	f, err := Open(symtest.FindTarget(t, "local", "amd64", false, true).Path)
	if err != nil {
		t.Fatal(err)
	}
	fns, err := f.Funcs("main.recurse")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Funcs("main.recurse"); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Funcs after Close: %v", err)
	}
	if _, err := f.ReturnOffsets(fns[0]); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ReturnOffsets after Close: %v", err)
	}
	if fr := f.Frames(fns[0].Entry + 1); fr != nil {
		t.Errorf("Frames after Close: %v", fr)
	}
	if err := f.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}

func TestPattern(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"main.main", "main.main", true},
		{"main.main", "main.mainx", false},
		{"main.*", "main.main", true},
		{"*", "", true},
		{"*", "anything", true},
		{"pkg.(*Endpoint).regenerate*", "pkg.(*Endpoint).regenerateBPF", true},
		{"pkg.(*Endpoint).regenerate*", "pkg.(*Endpoint).regenerate", true},
		{"pkg.(*Endpoint).regenerate*", "pkg.(xEndpoint).regenerate", false},
		{"pkg.(*Endpoint).regenerate*", "pkg.(Endpoint).regenerate", false},
		{"pkg.(*Endpoint).regenerate", "pkg.(*Endpoint).regenerate", true},
		{"pkg.(*E*).regenerate", "pkg.(*Endpoint).regenerate", true},
		{"pkg.(*E*).regenerate", "pkg.(*Endpoint).regeneratex", false},
		{"*.(*Endpoint).*", "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF", true},
		{"main.rec?rse", "main.recurse", true},
		{"main.rec?rse", "main.recrse", false},
		{"a?c", "aéc", true},
		{"*a*b*c*", "xxaxxbxxcxx", true},
		{"*a*b*c*", "xxaxxcxxbxx", false},
		{"*aab", "aaaaaaaaaaaaaaaaaaaaaaaaaab", true},
	} {
		if got := compilePattern(tc.pattern).match([]byte(tc.name)); got != tc.want {
			t.Errorf("%q matches %q: %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

func TestPartialDistance(t *testing.T) {
	for _, tc := range []struct {
		s, name string
		want    int
	}{
		{"abc", "abc", 0},
		{"abc", "xxabcxx", 0},
		{"abd", "xxabcxx", 1},
		{"regenrateBPF", "pkg/endpoint.(*Endpoint).regenerateBPF", 1},
		{"main.(*Endpoint).regenerateBFP", "main.(*Endpoint).regenerateBPF", 1}, // the trailing F is a free suffix
		{"kitten", "sitting", 2}, // "sittin"
		{"abc", "", 3},
	} {
		if got := partialDistance(tc.s, tc.name); got != tc.want {
			t.Errorf("partialDistance(%q, %q) = %d, want %d", tc.s, tc.name, got, tc.want)
		}
	}
}

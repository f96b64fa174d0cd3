package symbols

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"errors"
	"os"
	"slices"
	"testing"

	"golang.org/x/arch/arm64/arm64asm"
	"golang.org/x/arch/x86/x86asm"

	"github.com/cilium-tracer/tracer/pkg/symbols/disasm"

	"github.com/cilium-tracer/tracer/internal/testagent"
)

// The compiler marks the end of a function's prologue in DWARF's line
// table: the instruction after its stack check, or on amd64 after the frame
// pointer setup that follows it. EntryOnce, which reads only the
// instructions and the pclntab, finds that instruction in unstripped
// binaries, and the same offsets in their stripped twins.
func TestEntryOnceIsPrologueEnd(t *testing.T) {
	for _, v := range agentVariants {
		if v.Stripped {
			continue
		}
		path := testagent.Build(t, v)
		ends := prologueEnds(t, path)
		stripped := v
		stripped.Stripped = true
		bins := map[string]string{"": path, " stripped": testagent.Build(t, stripped)}
		for suffix, p := range bins {
			f, err := Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fns, err := f.Funcs("*")
			if err != nil {
				t.Fatal(err)
			}
			checked, moved := 0, 0
			for _, fn := range fns {
				off, err := f.EntryOnce(fn)
				var de *disasm.DecodeError
				var fe *FrameError
				if errors.As(err, &de) || errors.As(err, &fe) {
					continue // refused as ReturnOffsets refuses it
				}
				if err != nil {
					t.Errorf("%v%s: %v", v, suffix, err)
					continue
				}
				checked++
				i, _ := slices.BinarySearch(ends, fn.Entry)
				ok := i < len(ends) && ends[i] < fn.End
				var want uint64
				if ok {
					want = ends[i]
				}
				got := fn.Entry + off - fn.Offset
				switch {
				case ok && got == fn.Entry:
					// No check: none must hide before the prologue's end.
					if n := condBranches(t, f.Arch, p, fn.Offset, want-fn.Entry); n > 0 {
						t.Errorf("%v%s: %s: no stack check found, but %d conditional branches before DWARF's prologue end", v, suffix, fn.Name, n)
					}
				case ok && got != want && !fpSetup(t, p, off, want-got):
					t.Errorf("%v%s: %s: past the stack check at %#x, DWARF's prologue end at %#x", v, suffix, fn.Name, got, want)
				case !ok && got != fn.Entry:
					t.Errorf("%v%s: %s: past the stack check at %#x, DWARF has no prologue end", v, suffix, fn.Name, got)
				case ok:
					moved++
				}
			}
			t.Logf("%v%s: %d functions, %d with a stack check", v, suffix, checked, moved)
			if moved < checked/3 {
				t.Errorf("%v%s: only %d of %d functions have a stack check", v, suffix, moved, checked)
			}
		}
	}
}

// fpSetup reports whether the n bytes at file offset off of path save and set
// the frame pointer: on amd64 the compiler ends the prologue after PUSHQ BP
// and MOVQ SP, BP, which follow the stack check.
func fpSetup(t *testing.T, path string, off, n uint64) bool {
	setup := []byte{0x55, 0x48, 0x89, 0xe5}
	if n == 0 || n > uint64(len(setup)) {
		return false
	}
	return bytes.Equal(readAt(t, path, off, n), setup[:n])
}

// condBranches counts the conditional branches in the n bytes at file
// offset off of path.
func condBranches(t *testing.T, arch, path string, off, n uint64) int {
	code := readAt(t, path, off, n)
	count := 0
	for i := 0; i < len(code); {
		if arch == "arm64" {
			in, err := arm64asm.Decode(code[i:])
			if err == nil && in.Op == arm64asm.B && in.Args[1] != nil {
				count++
			}
			i += 4
			continue
		}
		in, err := x86asm.Decode(code[i:], 64)
		if err != nil {
			t.Fatalf("%s: decode at %#x: %v", path, off+uint64(i), err)
		}
		if _, rel := in.Args[0].(x86asm.Rel); rel && in.Op != x86asm.JMP && in.Op != x86asm.CALL {
			count++
		}
		i += in.Len
	}
	return count
}

// readAt reads the n bytes at file offset off of path.
func readAt(t *testing.T, path string, off, n uint64) []byte {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, int64(off)); err != nil {
		t.Fatal(err)
	}
	return b
}

// prologueEnds returns the addresses DWARF marks as the end of a
// function's prologue, sorted.
func prologueEnds(t *testing.T, path string) []uint64 {
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := f.DWARF()
	if err != nil {
		t.Fatal(err)
	}
	var ends []uint64
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if e == nil {
			break
		}
		if e.Tag != dwarf.TagCompileUnit {
			r.SkipChildren()
			continue
		}
		lr, err := d.LineReader(e)
		if err != nil || lr == nil {
			continue
		}
		var le dwarf.LineEntry
		for lr.Next(&le) == nil {
			if le.PrologueEnd {
				ends = append(ends, le.Address)
			}
		}
	}
	slices.Sort(ends)
	return ends
}

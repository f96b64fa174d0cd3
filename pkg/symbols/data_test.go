package symbols

import (
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
)

// Strings reads runtime.waitReasonStrings as debug/elf does in every
// fixed-address build that has a symbol table, and the same through the
// dynamic relocations of the PIE builds of each toolchain.
func TestStrings(t *testing.T) {
	const name = "runtime.waitReasonStrings"
	want := map[string][]string{} // by toolchain and architecture
	for _, tg := range symtest.Targets(t) {
		if tg.Stripped || tg.PIE || tg.External {
			continue
		}
		w := symtest.Strings(t, tg.Path, name)
		if len(w) < 20 || !slices.Contains(w, "chan receive") {
			t.Fatalf("%s: debug/elf reads %q", tg, w)
		}
		want[tg.Toolchain+"/"+tg.GOARCH] = w
	}
	for _, tg := range symtest.Targets(t) {
		f := openTarget(t, tg)
		got, err := f.Strings(name)
		if tg.Stripped {
			if !errors.Is(err, ErrNoSymbol) {
				t.Errorf("%s: Strings: %v, want ErrNoSymbol", tg, err)
			}
			continue
		}
		if w := want[tg.Toolchain+"/"+tg.GOARCH]; err != nil || !slices.Equal(got, w) {
			t.Errorf("%s: Strings = %q, %v; want %q", tg, got, err, w)
		}
	}
	f := openTarget(t, symtest.FindTarget(t, "local", "amd64", false, false))
	if _, err := f.Strings("runtime.noSuchVariable"); !errors.Is(err, ErrNoSymbol) {
		t.Errorf("Strings of a missing variable: %v, want ErrNoSymbol", err)
	}
	// A variable of another type, whose size is no multiple of a string
	// header's.
	if s, err := f.Strings("runtime.firstmoduledata"); err == nil {
		t.Errorf("Strings(runtime.firstmoduledata) = %q, want an error", s)
	}
	f.Close()
	if _, err := f.Strings(name); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Strings after Close: %v", err)
	}
}

// The frame is empty at every function's entry and at its RETs, and
// allocated in between; outside Go code there is no answer.
func TestSPDelta(t *testing.T) {
	for _, tg := range []*symtest.Target{
		symtest.FindTarget(t, "local", "amd64", false, true),
		symtest.FindTarget(t, "local", "arm64", false, true),
		symtest.FindTarget(t, "go1.22.12", "amd64", true, true),
	} {
		f := openTarget(t, tg)
		for _, name := range []string{"main.(*Endpoint).regenerateBPF", "main.recurse"} {
			fns, err := f.Funcs(name)
			if err != nil {
				t.Fatal(err)
			}
			fn := fns[0]
			if d, ok := f.SPDelta(fn.Entry); !ok || d != 0 {
				t.Errorf("%s: %s: SPDelta(entry) = %d, %v", tg, name, d, ok)
			}
			maxDelta := int32(0)
			for pc := fn.Entry; pc < fn.End; pc++ {
				d, ok := f.SPDelta(pc)
				if !ok || d < 0 {
					t.Fatalf("%s: %s: SPDelta(%#x) = %d, %v", tg, name, pc, d, ok)
				}
				maxDelta = max(maxDelta, d)
			}
			if maxDelta < 16 {
				t.Errorf("%s: %s: the frame never exceeds %d bytes", tg, name, maxDelta)
			}
			rets, err := f.ReturnOffsets(fn)
			if err != nil {
				t.Fatal(err)
			}
			for _, off := range rets {
				if d, ok := f.SPDelta(off - fn.Offset + fn.Entry); !ok || d != 0 {
					t.Errorf("%s: %s: SPDelta(RET at %#x) = %d, %v", tg, name, off, d, ok)
				}
			}
		}
		for _, pc := range []uint64{0, f.text.Vaddr - 1, 1 << 62} {
			if d, ok := f.SPDelta(pc); ok {
				t.Errorf("%s: SPDelta(%#x) = %d outside the text", tg, pc, d)
			}
		}
	}
}

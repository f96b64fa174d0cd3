package symbols

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
)

func TestGoMinor(t *testing.T) {
	for _, tc := range []struct {
		version string
		minor   int // 0: not known
	}{
		{"go1.26.8", 26},
		{"go1.26", 26},
		{"go1.26.0", 26},
		{"go1.26rc1", 26},
		{"go1.26rc2", 26},
		{"go1.25beta1", 25},
		{"go1.22.12", 22},
		{"go1.22.12 X:nodwarf5", 22},
		{"go1.22.12-custom", 22},
		{"go1.18", 18},
		{"go1.18.10", 18},
		{"go1.17.13", 0},
		{"go1.27.0", 0},
		{"go1.27rc1", 0},
		{"go1.100", 0},
		{"devel go1.26-abcdef0 Mon Jan 5 00:00:00 2026 +0000", 0},
		{"go1.26x", 0},
		{"go1.26.", 0},
		{"go1..26", 0},
		{"go2.0", 0},
		{"", 0},
	} {
		minor, ok := GoMinor(tc.version)
		if ok != (tc.minor != 0) || minor != tc.minor {
			t.Errorf("GoMinor(%q) = %d, %v; want %d", tc.version, minor, ok, tc.minor)
		}
	}
}

// Every function that has an ABI0 and an ABIInternal body resolves, without
// the symbol table, to the body the symbol table names: the ABIInternal one
// is where R14 holds g. Most such pairs are Go functions called from
// assembly (runtime.newstack from runtime.morestack), told apart by the
// release's FuncIDWrapper (or, for reflect.callMethod, which is marked as a
// wrapper itself, by which body calls the other); the others are assembly functions with an
// ABIInternal wrapper. With -randlayout the wrapper can come first, so the
// order of the function table cannot stand in for the marking.
func TestABIWrapper(t *testing.T) {
	for _, tg := range symtest.Targets(t) {
		if tg.Stripped {
			continue
		}
		f := openTarget(t, tg)
		pcln, err := f.pcln()
		if err != nil {
			t.Fatal(err)
		}
		fromSymtab, err := f.Funcs("*")
		if err != nil {
			t.Fatal(err)
		}
		byName := make(map[string]Func, len(fromSymtab))
		for _, fn := range fromSymtab {
			byName[fn.Name] = fn
		}
		// Without the symbol table: the stripped build when it is laid
		// out identically, else this build's own .gopclntab.
		resolve := func(name string) ([]Func, error) { return f.pclnFuncs(compilePattern(name)) }
		if s := symtest.StrippedSibling(t, tg); s != nil && !tg.External {
			resolve = openTarget(t, s).Funcs
		}
		wrapperID, ok := wrapperFuncID(f.GoVersion)
		if !ok {
			t.Fatalf("%s: no FuncIDWrapper for %s", tg, f.GoVersion)
		}
		goPairs, wrapperFirst := 0, 0
		for name, body := range byName {
			wrapper, ok := byName[name+abi0Suffix]
			if !ok {
				continue
			}
			rb, rw := funcRecordAt(t, pcln, body.Entry), funcRecordAt(t, pcln, wrapper.Entry)
			if rw.flag()&funcFlagAsm == 0 {
				goPairs++
				// reflect.callMethod is a wrapper itself.
				if rw.funcID() != wrapperID || (rb.funcID() == wrapperID) != (name == "reflect.callMethod") {
					t.Errorf("%s: %s funcID %d, its ABI0 wrapper %d; FuncIDWrapper of %s is %d",
						tg, name, rb.funcID(), rw.funcID(), f.GoVersion, wrapperID)
				}
				if wrapper.Entry < body.Entry {
					wrapperFirst++
				}
			}
			for _, want := range []Func{body, wrapper} {
				got, err := resolve(want.Name)
				if err != nil || len(got) != 1 || got[0].Entry != want.Entry {
					t.Errorf("%s: %s without the symbol table = %+v, %v; the symbol table says %#x", tg, want.Name, got, err, want.Entry)
				}
			}
		}
		if _, ok := byName["runtime.newstack.abi0"]; !ok || goPairs == 0 {
			t.Errorf("%s: no Go function with an ABI0 wrapper", tg)
		}
		if tg.RandLayout && wrapperFirst == 0 {
			t.Errorf("%s: -randlayout put no ABI0 wrapper before its body", tg)
		}
	}
}

func funcRecordAt(t *testing.T, pcln *pclntab, entry uint64) funcRecord {
	t.Helper()
	i, ok := pcln.find(entry)
	if !ok || pcln.entry(i) != entry {
		t.Fatalf("no function at %#x in the pclntab", entry)
	}
	r, ok := pcln.record(i)
	if !ok {
		t.Fatalf("no function record at %#x", entry)
	}
	return r
}

// A release whose FuncIDWrapper is not known cannot tell an ABI0 wrapper
// from its body: resolving such a function is an error naming it, not a
// guess; functions with one body resolve as before.
func TestABIWrapperUnknownRelease(t *testing.T) {
	f := openTarget(t, symtest.FindTarget(t, "local", "amd64", false, true))
	f.GoVersion = "go1.27.0"
	_, err := f.Funcs("runtime.newstack")
	var ae *ABIError
	if !errors.As(err, &ae) || ae.Func != "runtime.newstack" {
		t.Fatalf("Funcs(runtime.newstack) on go1.27.0: %v, want an *ABIError", err)
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "go1.27.0") {
		t.Errorf("error message: %q", msg)
	}
	if fns, err := f.Funcs("main.recurse"); err != nil || len(fns) != 1 {
		t.Errorf("Funcs(main.recurse) on go1.27.0: %v, %v", fns, err)
	}
}

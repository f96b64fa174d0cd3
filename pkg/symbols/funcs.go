package symbols

import (
	"bytes"
	"fmt"
	"os"
	"sort"
	"strings"
	"unicode"
)

// A Func is one function body in the executable.
type Func struct {
	// Name is the fully qualified Go name. When a function has both an ABI0
	// and an ABIInternal body (assembly functions called from Go and Go
	// functions called from assembly), the ABI0 one is named with the
	// ".abi0" suffix, as in the linker's symbol table.
	Name   string
	Entry  uint64 // virtual address
	End    uint64 // virtual address one past the last instruction
	Offset uint64 // file offset of Entry, where a uprobe attaches
}

// A NoMatchError reports a pattern that matched no function.
type NoMatchError struct {
	Pattern string
	Closest []string // the most similar function names, best first
}

func (e *NoMatchError) Error() string {
	if len(e.Closest) == 0 {
		return fmt.Sprintf("no function matches %q", e.Pattern)
	}
	return fmt.Sprintf("no function matches %q (closest: %s)", e.Pattern, strings.Join(e.Closest, ", "))
}

const abi0Suffix = ".abi0"

// Funcs returns the functions whose names match pattern, ordered by address.
// pattern is an exact name or a glob: '*' matches any run of characters, '?'
// one character, and "(*" is literal so that method names need no escaping:
// "pkg.(*Endpoint).regenerate*" matches every method of *Endpoint whose name
// starts with "regenerate". Functions come from .symtab when present, else
// from .gopclntab. If nothing matches, the error is a *NoMatchError.
func (f *File) Funcs(pattern string) (fns []Func, err error) {
	defer func() {
		if !catchPanics {
			return
		}
		if p := recover(); p != nil {
			fns, err = nil, fmt.Errorf("malformed executable: %v", p)
		}
	}()
	if f.closed.Load() {
		return nil, os.ErrClosed
	}
	p := compilePattern(pattern)
	if !f.Stripped {
		fns, err = f.symtabFuncs(p)
	} else {
		fns, err = f.pclnFuncs(p)
	}
	if err != nil {
		return nil, err
	}
	if len(fns) == 0 {
		return nil, &NoMatchError{Pattern: pattern, Closest: f.closest(p.literal(), 5)}
	}
	return fns, nil
}

func (f *File) symtabFuncs(p pattern) ([]Func, error) {
	st, err := f.symbols()
	if err != nil {
		return nil, err
	}
	var fns []Func
	abi0 := make(map[string]bool) // base names of matched ".abi0" symbols
	f.candidates(p, &f.symIndex, st.n(), st.baseName, func(i int) {
		name, value, size, ok := st.fn(i)
		if !ok {
			return
		}
		base, isABI0 := bytes.CutSuffix(name, []byte(abi0Suffix))
		if !p.match(name) && !(isABI0 && p.match(base)) || !goName(name) {
			return
		}
		off, ok := f.fileOffset(value)
		if !ok || value+size < value {
			return
		}
		if isABI0 {
			abi0[string(base)] = false
		}
		fns = append(fns, Func{Name: string(name), Entry: value, End: value + size, Offset: off})
	})
	// The linker suffixes every ABI0 symbol with ".abi0", but the suffix
	// only tells bodies apart when the function also has an ABIInternal
	// body; otherwise report the Go name, as the pclntab and tracebacks do.
	for base := range abi0 {
		f.candidates(compilePattern(base), &f.symIndex, st.n(), st.baseName, func(i int) {
			if name, _, _, ok := st.fn(i); ok && string(name) == base {
				abi0[base] = true
			}
		})
	}
	out := fns[:0]
	for _, fn := range fns {
		if base, ok := strings.CutSuffix(fn.Name, abi0Suffix); ok && !abi0[base] {
			fn.Name = base
		}
		if p.match([]byte(fn.Name)) {
			out = append(out, fn)
		}
	}
	fns = out
	sort.Slice(fns, func(i, j int) bool { return fns[i].Entry < fns[j].Entry })
	// Several symbols can share an address; report each body once.
	out = fns[:0]
	for i, fn := range fns {
		if i > 0 && fn.Entry == fns[i-1].Entry {
			continue
		}
		out = append(out, fn)
	}
	return out, nil
}

func (f *File) pclnFuncs(p pattern) ([]Func, error) {
	t, err := f.pcln()
	if err != nil {
		return nil, err
	}
	abi0 := p.mayMatchABI0()
	var idx []int
	f.candidates(p, &f.pclnIndex, t.nfunc, t.funcName, func(i int) {
		name := t.funcName(i)
		if (p.match(name) || (abi0 && p.match(append(name[:len(name):len(name)], abi0Suffix...)))) && goName(name) {
			idx = append(idx, i)
		}
	})
	// A name that appears twice is a function with an ABI0 and an
	// ABIInternal body. Both always match together.
	byName := make(map[string][]int, len(idx))
	for _, i := range idx {
		n := string(t.funcName(i))
		byName[n] = append(byName[n], i)
	}
	var fns []Func
	for _, i := range idx {
		name := string(t.funcName(i))
		if twins := byName[name]; len(twins) == 2 {
			abi0, err := f.isABI0(t, i, twins)
			if err != nil {
				return nil, err
			}
			if abi0 {
				name += abi0Suffix
			}
		}
		if !p.match([]byte(name)) {
			continue
		}
		entry := t.entry(i)
		off, ok := f.fileOffset(entry)
		if !ok {
			continue
		}
		fns = append(fns, Func{Name: name, Entry: entry, End: t.codeEnd(i), Offset: off})
	}
	// The function table is sorted by address in any binary the linker
	// wrote; sorting again costs little and holds for the others.
	sort.Slice(fns, func(i, j int) bool { return fns[i].Entry < fns[j].Entry })
	return fns, nil
}

// goName rejects names with control characters: no Go name has one, so
// the table is corrupt there, and the name would break error lines.
func goName(name []byte) bool {
	return !bytes.ContainsFunc(name, unicode.IsControl)
}

// isABI0 tells which of two bodies sharing a name is the ABI0 one: an
// assembly function is ABI0 and gets an ABIInternal wrapper; a Go function
// is ABIInternal and gets an ABI0 wrapper, which the linker marks with the
// release's FuncIDWrapper. A probe on the ABI0 wrapper would not find g in
// R14, so a release whose FuncIDWrapper is not known is an error, not a
// guess. A few Go functions are wrappers themselves (reflect.callMethod);
// their ABI0 wrapper is the body that branches to the other.
func (f *File) isABI0(t *pclntab, i int, twins []int) (bool, error) {
	other := twins[0]
	if other == i {
		other = twins[1]
	}
	name := string(t.funcName(i))
	ri, ok1 := t.record(i)
	ro, ok2 := t.record(other)
	if !ok1 || !ok2 {
		return false, fmt.Errorf("%s: malformed function record", name)
	}
	asmI, asmO := ri.flag()&funcFlagAsm != 0, ro.flag()&funcFlagAsm != 0
	if asmI != asmO {
		return asmI, nil
	}
	wrapper, ok := wrapperFuncID(f.GoVersion)
	if !ok {
		return false, &ABIError{Func: name, GoVersion: f.GoVersion}
	}
	wrapI, wrapO := ri.funcID() == wrapper, ro.funcID() == wrapper
	if wrapI != wrapO {
		return wrapI, nil
	}
	callsI, callsO := f.branchesTo(t, i, t.entry(other)), f.branchesTo(t, other, t.entry(i))
	if callsI == callsO {
		return false, &ABIError{Func: name, GoVersion: f.GoVersion}
	}
	return callsI, nil
}

// branchesTo reports whether function i has a direct call or jump to target.
func (f *File) branchesTo(t *pclntab, i int, target uint64) bool {
	entry := t.entry(i)
	off, ok := f.fileOffset(entry)
	if !ok {
		return false
	}
	b, err := f.decode(Func{Name: string(t.funcName(i)), Entry: entry, End: t.codeEnd(i), Offset: off})
	if err != nil {
		return false
	}
	for _, br := range b.Branches {
		if br.Target == target {
			return true
		}
	}
	return false
}

// An ABIError reports a function with two bodies, one of them the ABI0
// wrapper of the other, that cannot be told apart: the executable's Go
// release is not one whose wrapper marking is known, or neither body bears
// it.
type ABIError struct {
	Func      string
	GoVersion string
}

func (e *ABIError) Error() string {
	if _, ok := wrapperFuncID(e.GoVersion); !ok {
		return fmt.Sprintf("%s: cannot tell its ABI0 wrapper from its body without a symbol table on Go %q (known: go1.%d to go1.%d)",
			e.Func, e.GoVersion, minGoMinor, maxGoMinor)
	}
	return fmt.Sprintf("%s: cannot tell its ABI0 wrapper from its body without a symbol table", e.Func)
}

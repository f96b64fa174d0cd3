package args

import (
	"debug/dwarf"
	"encoding/binary"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
)

// stdlib reads DWARF with debug/elf and debug/dwarf, whole and eagerly, as
// the tracer did before it read only what captures need: the reference the
// lazy reader is checked against.
type stdlib struct {
	f *symbols.File
	d *dwarf.Data
	// subprograms holds the entry of each function: the first in the
	// compile unit of its package, else the first anywhere.
	subprograms map[string]dwarf.Offset
	byPkg       map[string][]string // top-level subprograms by compile unit
}

func newStdlib(t testing.TB, f *symbols.File) stdlib {
	t.Helper()
	ef, err := f.ELF()
	if err != nil {
		t.Fatal(err)
	}
	d, err := ef.DWARF()
	if err != nil {
		t.Fatal(err)
	}
	s := stdlib{f: f, d: d, subprograms: map[string]dwarf.Offset{}, byPkg: map[string][]string{}}
	own := map[string]bool{}
	r := d.Reader()
	var cu string
	for {
		e, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if e == nil {
			return s
		}
		if e.Tag == dwarf.TagCompileUnit {
			cu, _ = e.Val(dwarf.AttrName).(string)
			continue
		}
		if name, ok := e.Val(dwarf.AttrName).(string); ok && e.Tag == dwarf.TagSubprogram {
			_, seen := s.subprograms[name]
			if !seen || funcPackage(name) == cu && !own[name] {
				s.subprograms[name] = e.Offset
				own[name] = funcPackage(name) == cu
			}
			if !slices.Contains(s.byPkg[cu], name) {
				s.byPkg[cu] = append(s.byPkg[cu], name)
			}
		}
		r.SkipChildren()
	}
}

// funcs returns the names of the top-level subprograms of the compile units
// named in pkgs.
func (s stdlib) funcs(pkgs ...string) []string {
	var names []string
	for _, p := range pkgs {
		names = append(names, s.byPkg[p]...)
	}
	return names
}

// params reads the formal parameters of the named function and assigns
// their registers.
func (s stdlib) params(name string) ([]Param, error) {
	off, ok := s.subprograms[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, errNoEntry)
	}
	r := s.d.Reader()
	r.Seek(off)
	e, err := r.Next()
	if err != nil {
		return nil, err
	}
	var ps []Param
	for e.Children {
		c, err := r.Next()
		if err != nil {
			return nil, err
		}
		if c == nil || c.Tag == 0 {
			break
		}
		r.SkipChildren()
		if out, _ := c.Val(dwarf.AttrVarParam).(bool); c.Tag != dwarf.TagFormalParameter || out {
			continue
		}
		pname, _ := c.Val(dwarf.AttrName).(string)
		toff, _ := c.Val(dwarf.AttrType).(dwarf.Offset)
		typ, err := s.d.Type(toff)
		if err != nil {
			return nil, err
		}
		ps = append(ps, Param{Name: pname, Type: typ.String(), typ: typ})
	}
	a, err := NewRegAssigner(s.f.Arch)
	if err != nil {
		return nil, err
	}
	for i := range ps {
		ps[i].Regs, ps[i].OnStack = a.Assign(words(ps[i].typ))
	}
	return ps, nil
}

// captureExprs returns expressions for p and, through pointers to structs,
// for its fields and theirs one pointer further, as far as debug/dwarf's
// types show them.
func captureExprs(p Param) []string {
	exprs := []string{p.Name}
	fields := func(t dwarf.Type) []*dwarf.StructField {
		if pt, ok := unwrap(t).(*dwarf.PtrType); ok {
			if st, ok := unwrap(pt.Type).(*dwarf.StructType); ok {
				return st.Field
			}
		}
		return nil
	}
	for _, f := range fields(p.typ) {
		exprs = append(exprs, p.Name+"."+f.Name)
		for i, g := range fields(f.Type) {
			if i == 20 {
				break
			}
			exprs = append(exprs, p.Name+"."+f.Name+"."+g.Name)
		}
	}
	return exprs
}

// checkLikeStdlib compares, for every function of the packages, the
// parameters and captures the resolver finds with debug/dwarf's. It returns
// how many captures it compared.
func checkLikeStdlib(t *testing.T, f *symbols.File, pkgs ...string) int {
	t.Helper()
	std := newStdlib(t, f)
	names := std.funcs(pkgs...)
	fns := make([]symbols.Func, len(names))
	for i, n := range names {
		fns[i] = symbols.Func{Name: n}
	}
	r := NewCaptureResolver(f, fns)
	noop := func(dwarf.Type) error { return nil }
	n := 0
	for _, fn := range fns {
		want, wantErr := std.params(fn.Name)
		got, err := r.Params(fn)
		if (err != nil) != (wantErr != nil) {
			t.Errorf("%s: Params error %v, debug/dwarf's %v", fn.Name, err, wantErr)
			continue
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d parameters, debug/dwarf finds %d", fn.Name, len(got), len(want))
			continue
		}
		for i := range got {
			g, w := got[i], want[i]
			if g.Name != w.Name || g.Type != w.Type || !reflect.DeepEqual(g.Regs, w.Regs) || g.OnStack != w.OnStack || g.typ.Size() != w.typ.Size() {
				t.Errorf("%s: parameter %d is %s %s in %v (stack %v, size %d); debug/dwarf: %s %s in %v (stack %v, size %d)",
					fn.Name, i, g.Name, g.Type, g.Regs, g.OnStack, g.typ.Size(), w.Name, w.Type, w.Regs, w.OnStack, w.typ.Size())
			}
			for _, expr := range captureExprs(w) {
				gc, gerr := r.Resolve(fn, "x", expr)
				wc, werr := resolveCapture(fn.Name, want, "x", expr, noop)
				if gc != wc || fmt.Sprint(gerr) != fmt.Sprint(werr) {
					t.Errorf("%s: capture %s = %+v, %v; debug/dwarf: %+v, %v", fn.Name, expr, gc, gerr, wc, werr)
				}
				if werr == nil {
					n++
				}
			}
		}
	}
	return n
}

// The lazy reader finds what debug/dwarf finds in every unstripped build of
// the target, Go 1.18 to 1.26 (DWARF 4 and 5), amd64 and arm64, PIE and
// externally linked (with gcc's compile units in .debug_info), and in the
// example agent, whose types mimic cilium's.
func TestDWARFLikeStdlib(t *testing.T) {
	for _, tg := range symtest.Targets(t) {
		if tg.Stripped {
			continue
		}
		t.Run(strings.ReplaceAll(tg.String(), "/", "-"), func(t *testing.T) {
			f := symtest.Open(t, tg.Path, symbols.Open)
			if n := checkLikeStdlib(t, f, "main", "runtime", "fmt", "reflect", "strconv", "os", "time"); n < 1000 {
				t.Errorf("only %d captures compared", n)
			}
			want := symtest.DWARFFieldOffset(t, tg.Path, "runtime.g", "goid")
			if got, err := RuntimeFieldOffset(f, "runtime.g", "goid"); err != nil || got != want {
				t.Errorf("runtime.g.goid at %d, %v; debug/dwarf says %d", got, err, want)
			}
		})
	}
	t.Run("agent", func(t *testing.T) {
		f, _ := openAgent(t, false)
		if n := checkLikeStdlib(t, f, "github.com/cilium/cilium/pkg/endpoint", "github.com/cilium/cilium/pkg/policy", "net/netip"); n < 100 {
			t.Errorf("only %d captures compared", n)
		}
	})
}

// A capture reads the compile units of the function's package and of
// runtime, which holds the types, and of the types only those on its path:
// the struct a pointer field points to keeps its fields unread.
func TestDWARFReadLazily(t *testing.T) {
	f, fn := openAgent(t, false)
	r := NewCaptureResolver(f, []symbols.Func{fn})
	c, err := r.Resolve(fn, "id", "e.ID")
	if err != nil || c.Offset != 16 {
		t.Fatalf("e.ID: %+v, %v", c, err)
	}
	if r.info.all {
		t.Error("read every compile unit")
	}
	for _, u := range r.info.units {
		if u.name != "runtime" && u.name != funcPackage(fn.Name) {
			t.Errorf("read the compile unit of %s", u.name)
		}
	}
	params, err := r.Params(fn)
	if err != nil {
		t.Fatal(err)
	}
	endpoint := unwrap(params[0].typ.(*dwarf.PtrType).Type).(*dwarf.StructType)
	for _, field := range endpoint.Field {
		if field.Name != "owner" {
			continue
		}
		owner := unwrap(unwrap(field.Type).(*dwarf.PtrType).Type)
		if st, ok := owner.(*dwarf.StructType); !ok || len(st.Field) > 0 {
			t.Errorf("e.owner points to %s with fields read", owner)
		}
		return
	}
	t.Errorf("no field owner in %s", endpoint)
}

// seedAbbrev are the abbreviations of the units dieWriter writes, in the
// forms the Go linker uses, by code.
var seedAbbrev = []struct {
	tag      dwarf.Tag
	children byte
	attrs    [][2]uint64
}{
	1:  {dwarf.TagCompileUnit, 1, [][2]uint64{{uint64(dwarf.AttrName), formString}}},
	2:  {dwarf.TagBaseType, 0, [][2]uint64{{uint64(dwarf.AttrName), formString}, {uint64(dwarf.AttrEncoding), formData1}, {uint64(dwarf.AttrByteSize), formData1}}},
	3:  {dwarf.TagStructType, 1, [][2]uint64{{uint64(dwarf.AttrName), formString}, {uint64(dwarf.AttrByteSize), formUdata}}},
	4:  {dwarf.TagMember, 0, [][2]uint64{{uint64(dwarf.AttrName), formString}, {uint64(dwarf.AttrType), formRefAddr}, {uint64(dwarf.AttrDataMemberLoc), formUdata}}},
	5:  {dwarf.TagPointerType, 0, [][2]uint64{{uint64(dwarf.AttrName), formString}, {uint64(dwarf.AttrType), formRefAddr}}},
	6:  {dwarf.TagTypedef, 0, [][2]uint64{{uint64(dwarf.AttrName), formString}, {uint64(dwarf.AttrType), formRefAddr}}},
	7:  {dwarf.TagArrayType, 1, [][2]uint64{{uint64(dwarf.AttrName), formString}, {uint64(dwarf.AttrType), formRefAddr}}},
	8:  {dwarf.TagSubrangeType, 0, [][2]uint64{{uint64(dwarf.AttrCount), formUdata}}},
	9:  {dwarf.TagSubprogram, 1, [][2]uint64{{uint64(dwarf.AttrName), formString}}},
	10: {dwarf.TagFormalParameter, 0, [][2]uint64{{uint64(dwarf.AttrName), formString}, {uint64(dwarf.AttrType), formRefAddr}, {uint64(dwarf.AttrVarParam), formFlag}}},
}

func seedAbbrevTable() []byte {
	var b []byte
	for code, d := range seedAbbrev[1:] {
		b = append(b, byte(code+1), byte(d.tag), d.children)
		for _, a := range d.attrs {
			b = append(b, byte(a[0]), byte(a[1]))
		}
		b = append(b, 0, 0)
	}
	return append(b, 0)
}

// A dieWriter writes a DWARF 5 compile unit at section offset 0 with the
// seedAbbrev abbreviations.
type dieWriter struct {
	unit   []byte
	labels map[string]int
	refs   map[int]string // position of a reference: its label
}

func newDIEWriter() *dieWriter {
	// Length, version 5, compile unit, 8-byte addresses, abbreviations
	// at 0.
	return &dieWriter{unit: []byte{0, 0, 0, 0, 5, 0, 1, 8, 0, 0, 0, 0}, labels: map[string]int{}, refs: map[int]string{}}
}

// die writes an entry labelled label: strings as strings, bytes as one
// byte, ints as ULEB128, "@label" as a reference to that entry.
func (w *dieWriter) die(label string, code byte, vals ...any) {
	if label != "" {
		w.labels[label] = len(w.unit)
	}
	w.unit = append(w.unit, code)
	for _, v := range vals {
		switch v := v.(type) {
		case string:
			if ref, ok := strings.CutPrefix(v, "@"); ok {
				w.refs[len(w.unit)] = ref
				w.unit = append(w.unit, 0, 0, 0, 0)
				continue
			}
			w.unit = append(append(w.unit, v...), 0)
		case byte:
			w.unit = append(w.unit, v)
		case int:
			w.unit = binary.AppendUvarint(w.unit, uint64(v))
		}
	}
}

// end ends a list of children.
func (w *dieWriter) end() { w.unit = append(w.unit, 0) }

func (w *dieWriter) bytes() []byte {
	for pos, label := range w.refs {
		binary.LittleEndian.PutUint32(w.unit[pos:], uint32(w.labels[label]))
	}
	binary.LittleEndian.PutUint32(w.unit, uint32(len(w.unit)-4))
	return w.unit
}

// dwarfSeed is a small compile unit: a function f(e *Endpoint, n [2]ID)
// where Endpoint holds an ID and a pointer to itself, ID is a typedef of
// uint16, and P is the Go type `type P *P`; and its abbreviations.
func dwarfSeed() (abbrev, unit []byte) {
	w := newDIEWriter()
	w.die("", 1, "main")
	w.die("f", 9, "main.f")
	w.die("", 10, "e", "@ptr", byte(0))
	w.die("", 10, "n", "@arr", byte(0))
	w.die("", 10, "~r0", "@id", byte(1))
	w.end()
	w.die("u16", 2, "uint16", byte(7), byte(2))
	w.die("id", 6, "main.ID", "@u16")
	w.die("ep", 3, "main.Endpoint", 24)
	w.die("", 4, "next", "@ptr", 0)
	w.die("", 4, "p", "@p", 8)
	w.die("", 4, "ID", "@id", 16)
	w.end()
	w.die("ptr", 5, "*main.Endpoint", "@ep")
	w.die("arr", 7, "[2]main.ID", "@id")
	w.die("", 8, 2)
	w.end()
	w.die("p", 6, "main.P", "@pptr")
	w.die("pptr", 5, "*main.P", "@p")
	w.end()
	return seedAbbrevTable(), w.bytes()
}

// Types that contain themselves where naming or sizing them would recurse
// forever are errors, read directly or through a parameter.
func TestDWARFCycles(t *testing.T) {
	for name, write := range map[string]func(w *dieWriter){
		"pointer to itself": func(w *dieWriter) { w.die("t", 5, "*T", "@t") },
		"array of itself": func(w *dieWriter) {
			w.die("t", 7, "[1]T", "@t")
			w.die("", 8, 1)
			w.end()
		},
		"typedefs of each other": func(w *dieWriter) {
			w.die("t", 6, "T", "@u")
			w.die("u", 6, "U", "@t")
		},
		"struct holding itself": func(w *dieWriter) {
			w.die("t", 3, "T", 8)
			w.die("", 4, "a", "@u", 0)
			w.end()
			w.die("u", 7, "[1]T", "@t")
			w.die("", 8, 1)
			w.end()
		},
	} {
		w := newDIEWriter()
		w.die("", 1, "main")
		w.die("", 9, "main.f")
		w.die("", 10, "x", "@t", byte(0))
		w.end()
		write(w)
		w.end()
		u, err := parseUnitHeader(0, w.bytes(), 4, false, seedAbbrevTable(), map[uint64]abbrevTable{})
		if err != nil {
			t.Fatal(err)
		}
		subs, err := u.subprograms(map[string]bool{"main.f": true})
		if err != nil {
			t.Fatal(err)
		}
		info := &debugInfo{units: []*dwarfUnit{u}, all: true}
		r := &CaptureResolver{info: info, types: newTypeReader(info), subprograms: subs}
		if ps, err := r.params("main.f", false); err == nil || !strings.Contains(err.Error(), "itself") {
			t.Errorf("%s: params %v, %v; want an error", name, ps, err)
		}
	}
}

// The seed reads as intended.
func TestDWARFSeed(t *testing.T) {
	abbrev, unit := dwarfSeed()
	u, err := parseUnitHeader(0, unit, 4, false, abbrev, map[uint64]abbrevTable{})
	if err != nil {
		t.Fatal(err)
	}
	subs, err := u.subprograms(map[string]bool{"main.f": true})
	if err != nil {
		t.Fatal(err)
	}
	info := &debugInfo{units: []*dwarfUnit{u}, all: true}
	r := &CaptureResolver{info: info, types: newTypeReader(info), subprograms: subs}
	ps, err := r.params("main.f", false)
	if err != nil || len(ps) != 2 || ps[0].Type != "*struct main.Endpoint" || ps[1].Type != "[2]main.ID" {
		t.Fatalf("params %+v, %v", ps, err)
	}
	a, _ := NewRegAssigner("amd64")
	for i := range ps {
		ps[i].Regs, ps[i].OnStack = a.Assign(words(ps[i].typ))
	}
	c, err := resolveCapture("main.f", ps, "x", "e.next.ID", r.types.complete)
	if want := (Capture{Name: "x", Expr: "e.next.ID", Deref: true, DerefOffset: 16, Kind: KindUint, Size: 2}); err != nil || c != want {
		t.Errorf("e.next.ID: %+v, %v; want %+v", c, err, want)
	}
}

// FuzzDWARF reads a compile unit: every entry as a type, completed, named,
// sized and assigned registers, and the parameters and captures of every
// function. Cycles that would recurse forever must be errors.
//
//	go test -run '^$' -fuzz '^FuzzDWARF$' -fuzztime 10m -fuzzminimizetime 1000x ./pkg/symbols/args
func FuzzDWARF(f *testing.F) {
	abbrev, unit := dwarfSeed()
	f.Add(abbrev, unit)
	catchPanics = false
	f.Cleanup(func() { catchPanics = true })
	f.Fuzz(func(t *testing.T, abbrev, data []byte) {
		u, err := parseUnitHeader(0, data, 4, false, abbrev, map[uint64]abbrevTable{})
		if err != nil {
			symtest.OneLine(t, err)
			return
		}
		if u == nil {
			return
		}
		info := &debugInfo{units: []*dwarfUnit{u}, all: true}
		types := newTypeReader(info)
		var funcs []string
		for pos, n := u.first, 0; pos < len(u.data) && n < 256; n++ {
			e, next, err := u.entry(pos)
			if err != nil {
				symtest.OneLine(t, err)
				break
			}
			if next <= pos {
				t.Fatalf("entry at %d: next at %d", pos, next)
			}
			pos = next
			if e.tag == dwarf.TagSubprogram {
				funcs = append(funcs, e.name)
			}
			if e.tag == 0 {
				continue
			}
			typ, err := types.typ(e.off)
			if err == nil {
				err = types.complete(typ)
			}
			if err != nil {
				symtest.OneLine(t, err)
				continue
			}
			_, _ = typ.String(), typ.Size()
			valueKind(typ)
			a, _ := NewRegAssigner("amd64")
			a.Assign(words(typ))
		}
		for _, name := range funcs {
			subs, err := u.subprograms(map[string]bool{name: true})
			if err != nil {
				symtest.OneLine(t, err)
				return
			}
			if _, ok := subs[name]; !ok {
				continue // not at the top level
			}
			r := &CaptureResolver{info: info, types: newTypeReader(info), subprograms: subs}
			ps, err := r.params(name, false)
			if err != nil {
				symtest.OneLine(t, err)
				continue
			}
			a, _ := NewRegAssigner("amd64")
			for i := range ps {
				ps[i].Regs, ps[i].OnStack = a.Assign(words(ps[i].typ))
				for _, expr := range captureExprs(ps[i]) {
					if _, err := resolveCapture(name, ps, "x", expr, r.types.complete); err != nil {
						symtest.OneLine(t, err)
					}
				}
			}
		}
	})
}

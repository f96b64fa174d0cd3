package ciliumsrc

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/types"
	"strings"

	"github.com/cilium-tracer/tracer/pkg/symbols/args"
)

// A Request names a function and the captures to resolve on it.
type Request struct {
	Func string // as the linker names it
	// Captures are name and expression pairs, in the form the DWARF
	// resolver takes: a parameter and a field path (e.ID,
	// e.desiredPolicy.Revision) or a parameter alone.
	Captures [][2]string
}

// ErrNoParameter is wrapped by the error of a capture naming a parameter
// the function does not have.
var ErrNoParameter = errors.New("no such parameter")

// Resolve resolves the captures of each request for cilium built for
// linux/arch with std's standard library: the register and offsets the BPF
// programs read, as pkg/symbols/args resolves them from DWARF. Each
// capture's Expr is its raw form, argN+OFFSET:TYPE or
// argN+OFF1->OFF2:TYPE, which args.ParseRawCapture reads back. A capture
// naming a parameter its function does not have in this release is left
// out and listed in absent, as "function name"; a function or field that
// does not exist, or a package that does not type-check, is an error.
func (r *Release) Resolve(ctx context.Context, arch string, std *StdLib, reqs []Request) (_ map[string][]args.Capture, absent []string, _ error) {
	if _, err := args.NewRegAssigner(arch); err != nil {
		return nil, nil, err
	}
	tags, err := std.buildTags(ctx, arch)
	if err != nil {
		return nil, nil, err
	}
	if r.src == nil {
		r.src = newSourceCache()
	}
	c := &checker{
		ctx: ctx, rel: r, std: std, arch: arch, build: buildContext(arch, tags), src: r.src,
		pkgs: map[string]*srcPkg{}, consts: map[*ast.GenDecl]bool{}, checked: map[string]*types.Package{},
		sizes: types.SizesFor("gc", arch),
	}
	for _, req := range reqs {
		fn, err := ParseFuncName(req.Func)
		if err != nil {
			return nil, nil, err
		}
		if err := c.addRoot(fn, req.Captures); err != nil {
			return nil, nil, err
		}
	}
	out := map[string][]args.Capture{}
	for _, rt := range c.roots {
		tp, err := c.Import(rt.fn.Pkg)
		if err != nil {
			return nil, nil, err
		}
		fn, ok := tp.Scope().Lookup(rt.ident).(*types.Func)
		if !ok {
			return nil, nil, fmt.Errorf("%s: lost in pruning", rt.fn)
		}
		sig := fn.Type().(*types.Signature)
		ps := c.assign(arch, sig.Params())
		for _, nc := range rt.captures {
			capt, err := c.capture(ps, nc[0], nc[1])
			if errors.Is(err, ErrNoParameter) {
				absent = append(absent, rt.fn.String()+" "+nc[0])
				continue
			}
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", rt.fn, err)
			}
			out[rt.fn.String()] = append(out[rt.fn.String()], capt)
		}
		// Results are assigned from the first register again.
		if rs := c.assign(arch, sig.Results()); len(rs) > 0 {
			last := rs[len(rs)-1]
			if types.Identical(last.v.Type(), types.Universe.Lookup("error").Type()) && !last.onStack && len(last.regs) == 2 {
				out[rt.fn.String()] = append(out[rt.fn.String()], args.ErrorResultIn(last.regs[0]))
			}
		}
	}
	return out, absent, nil
}

// assign gives the parameters, or the results, of a signature the integer
// registers the register ABI assigns them on arch.
func (c *checker) assign(arch string, vars *types.Tuple) []param {
	a, _ := args.NewRegAssigner(arch) // arch checked by Resolve
	ps := make([]param, vars.Len())
	for i := range ps {
		ps[i].v = vars.At(i)
		ps[i].regs, ps[i].onStack = a.Assign(words(c.sizes, ps[i].v.Type()))
	}
	return ps
}

// A param is one parameter of a function with the integer registers the
// register ABI assigns it.
type param struct {
	v       *types.Var
	regs    []int
	onStack bool
}

// capture resolves expr against the parameters as args resolves it
// against DWARF: one pointer followed beyond the parameter at most.
func (c *checker) capture(ps []param, name, expr string) (args.Capture, error) {
	fail := func(format string, a ...any) (args.Capture, error) {
		return args.Capture{}, fmt.Errorf("capture %s=%s: %s", name, expr, fmt.Sprintf(format, a...))
	}
	path := strings.Split(expr, ".")
	var p *param
	for i := range ps {
		if ps[i].v.Name() == path[0] {
			p = &ps[i]
		}
	}
	switch {
	case p == nil:
		return args.Capture{}, fmt.Errorf("capture %s=%s: %w %s", name, expr, ErrNoParameter, path[0])
	case p.onStack:
		return fail("parameter %s is passed on the stack", path[0])
	case len(p.regs) == 0:
		return fail("parameter %s is in no integer register", path[0])
	}
	capt := args.Capture{Name: name, Reg: p.regs[0]}
	t := p.v.Type()
	if len(path) == 1 {
		capt.InReg = true
	} else {
		ptr, ok := t.Underlying().(*types.Pointer)
		if !ok {
			return fail("%s is not a pointer", path[0])
		}
		t = ptr.Elem()
		off := int64(0)
		for i, field := range path[1:] {
			st, ok := t.Underlying().(*types.Struct)
			if !ok {
				return fail("%s is not a struct", strings.Join(path[:i+1], "."))
			}
			j := -1
			fields := make([]*types.Var, st.NumFields())
			for k := range fields {
				fields[k] = st.Field(k)
				if fields[k].Name() == field {
					j = k
				}
			}
			if j < 0 {
				return fail("no field %s in %s", field, t)
			}
			off += c.sizes.Offsetsof(fields)[j]
			t = fields[j].Type()
			if i+2 == len(path) {
				break
			}
			if ptr, ok := t.Underlying().(*types.Pointer); ok {
				if capt.Deref {
					return fail("%s is a second pointer to follow", strings.Join(path[:i+2], "."))
				}
				capt.Deref, capt.Offset, off = true, off, 0
				t = ptr.Elem()
			}
		}
		if capt.Deref {
			capt.DerefOffset = off
		} else {
			capt.Offset = off
		}
	}
	kind, size, ok := valueKind(c.sizes, t)
	if !ok {
		return fail("type %s cannot be captured", t)
	}
	capt.Kind, capt.Size = kind, size
	capt.Expr = capt.Raw()
	back, err := args.ParseRawCapture(name, capt.Expr)
	if err != nil || back != capt {
		return fail("raw form %q reads back as %+v, %v", capt.Expr, back, err)
	}
	return capt, nil
}

// valueKind says how a value of type t is captured, as args does for the
// DWARF types the compiler writes for it.
func valueKind(sizes types.Sizes, t types.Type) (args.ValueKind, int, bool) {
	switch u := t.Underlying().(type) {
	case *types.Basic:
		size := int(sizes.Sizeof(u))
		info := u.Info()
		switch {
		case u.Kind() == types.Bool:
			return args.KindBool, 1, true
		case u.Kind() == types.String:
			return args.KindString, 16, true
		case u.Kind() == types.UnsafePointer:
			return args.KindPtr, 8, true
		case info&types.IsInteger != 0 && info&types.IsUnsigned != 0:
			return args.KindUint, size, true
		case info&types.IsInteger != 0:
			return args.KindInt, size, true
		}
	case *types.Pointer:
		return args.KindPtr, 8, true
	}
	return "", 0, false
}

// words splits a value of type t into the words the register ABI assigns,
// as args does for the DWARF types the compiler writes for it; inRegs is
// false for a type the ABI never puts in registers.
func words(sizes types.Sizes, t types.Type) (ws []args.Word, inRegs bool) {
	var add func(t types.Type) bool
	add = func(t types.Type) bool {
		switch u := t.Underlying().(type) {
		case *types.Basic:
			switch {
			case u.Kind() == types.String:
				ws = append(ws, args.IntWord, args.IntWord)
			case u.Info()&types.IsComplex != 0:
				ws = append(ws, args.FloatWord, args.FloatWord)
			case u.Info()&types.IsFloat != 0:
				ws = append(ws, args.FloatWord)
			default:
				ws = append(ws, args.IntWord)
			}
			return true
		case *types.Pointer, *types.Map, *types.Chan, *types.Signature:
			ws = append(ws, args.IntWord)
			return true
		case *types.Slice:
			ws = append(ws, args.IntWord, args.IntWord, args.IntWord)
			return true
		case *types.Interface:
			ws = append(ws, args.IntWord, args.IntWord)
			return true
		case *types.Struct:
			for i := range u.NumFields() {
				if !add(u.Field(i).Type()) {
					return false
				}
			}
			return true
		case *types.Array:
			switch u.Len() {
			case 0:
				return true
			case 1:
				return add(u.Elem())
			}
			return sizes.Sizeof(u) == 0
		}
		return false
	}
	inRegs = add(t)
	return ws, inRegs
}

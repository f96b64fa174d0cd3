package args

import (
	"debug/dwarf"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/mod/semver"

	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// ValueKind is how a captured value is read and shown.
type ValueKind string

const (
	KindUint   ValueKind = "uint"
	KindInt    ValueKind = "int"
	KindBool   ValueKind = "bool"
	KindPtr    ValueKind = "ptr"
	KindString ValueKind = "string"
	// KindError is a function's last result of type error, read at each
	// RET: Reg holds its itab word, Reg+1 its data word. It gives the
	// call's status, not an attribute.
	KindError ValueKind = "error"
)

// A Capture says where one value is at a function's entry, in the terms the
// BPF programs execute: start from an integer argument register, optionally
// add Offset and read memory there, optionally follow one pointer.
type Capture struct {
	Name string `json:"name"` // attribute key
	Expr string `json:"expr"` // as written by the user

	// Reg is the index of the integer argument register in the Go
	// register ABI (amd64: RAX, RBX, RCX, RDI, RSI, R8-R11; arm64: X0-X15).
	Reg int `json:"reg"`
	// InReg: the value is the register itself (a string: Reg holds the
	// data pointer, Reg+1 the length). Otherwise the value is in memory
	// at the register's value plus Offset.
	InReg  bool  `json:"in_reg,omitempty"`
	Offset int64 `json:"offset,omitempty"`
	// Deref: the word at register+Offset is a pointer; the value is at
	// that pointer plus DerefOffset.
	Deref       bool  `json:"deref,omitempty"`
	DerefOffset int64 `json:"deref_offset,omitempty"`

	Kind ValueKind `json:"kind"`
	Size int       `json:"size"` // bytes of a scalar; 16 (the header) for a string or an error

	// AtReturn: the value is a result, in result register Reg (InReg) at
	// each RET; Go's register ABI assigns results the argument registers
	// from the first again.
	AtReturn bool `json:"at_return,omitempty"`
}

// catchPanics turns panics in the DWARF reader into errors: it checks its
// bounds, but a binary from a container is untrusted input and must never
// crash the tracer. The fuzz test turns it off to see the panics the bounds
// checks should have prevented.
var catchPanics = true

// ErrNoDWARF is returned when a capture needs types from DWARF and the
// executable has none.
var ErrNoDWARF = errors.New("no DWARF (stripped executable): use the raw form argN+OFFSET:TYPE or an offsets file")

// A CaptureError reports a capture expression naming an argument or field
// that does not exist.
type CaptureError struct {
	Expr      string
	Missing   string   // the argument or field not found
	Field     bool     // Missing is a field, not an argument
	In        string   // the function or struct type searched
	Available []string // the names that exist there
}

func (e *CaptureError) Error() string {
	what := "argument"
	if e.Field {
		what = "field"
	}
	return fmt.Sprintf("capture %q: no %s %q in %s (available: %s)", e.Expr, what, e.Missing, e.In, strings.Join(e.Available, ", "))
}

// ParseCaptureFlag splits "NAME=EXPR".
func ParseCaptureFlag(s string) (name, expr string, err error) {
	name, expr, ok := strings.Cut(s, "=")
	name, expr = strings.TrimSpace(name), strings.TrimSpace(expr)
	if !ok || name == "" || expr == "" {
		return "", "", fmt.Errorf("capture %q: want NAME=EXPR, e.g. endpoint_id=e.ID or endpoint_id=arg0+16:u16", s)
	}
	return name, expr, nil
}

// ParseReturnFlag checks "NAME=retN", a capture of a result.
func ParseReturnFlag(s string) error {
	_, expr, err := ParseCaptureFlag(s)
	if err == nil && !IsReturnExpr(expr) {
		err = fmt.Errorf("capture-return %q: want NAME=retN, the N-th result from 0 (or retN:TYPE, result register N, without DWARF)", s)
	}
	return err
}

// IsRawCapture reports whether expr is in the raw form, argN...:TYPE or
// retN:TYPE, which needs no DWARF.
func IsRawCapture(expr string) bool {
	return (strings.HasPrefix(expr, "arg") || strings.HasPrefix(expr, "ret")) && strings.Contains(expr, ":")
}

var rawKinds = map[string]struct {
	kind ValueKind
	size int
}{
	"u8": {KindUint, 1}, "u16": {KindUint, 2}, "u32": {KindUint, 4}, "u64": {KindUint, 8},
	"s8": {KindInt, 1}, "s16": {KindInt, 2}, "s32": {KindInt, 4}, "s64": {KindInt, 8},
	"bool": {KindBool, 1}, "ptr": {KindPtr, 8}, "string": {KindString, 16},
}

// ParseRawCapture parses the raw form for binaries without DWARF:
//
//	argN:TYPE              the register itself (string: argN and argN+1)
//	argN+OFFSET:TYPE       memory at the register's value plus OFFSET
//	argN+OFF1->OFF2:TYPE   a pointer at argN+OFF1, then memory at it plus OFF2
//
//	retN:TYPE              result register N at each RET (TYPE not string)
//	retN:error             an error result: its itab word in result
//	                       register N, its data word in N+1
//
// N is the integer argument register's index (arg0 is the receiver or the
// first word of the first argument); offsets are decimal or 0x hex; TYPE is
// one of u8-u64, s8-s64, bool, ptr, string.
func ParseRawCapture(name, expr string) (Capture, error) {
	if strings.HasPrefix(expr, "ret") {
		return parseRawReturn(name, expr)
	}
	bad := func(why string) (Capture, error) {
		return Capture{}, fmt.Errorf("capture %q: %s (want argN[+OFFSET[->OFFSET]]:TYPE, TYPE one of u8-u64, s8-s64, bool, ptr, string)", expr, why)
	}
	loc, typ, ok := strings.Cut(expr, ":")
	if !ok || !strings.HasPrefix(loc, "arg") {
		return bad("not in the raw form")
	}
	k, ok := rawKinds[typ]
	if !ok {
		return bad("unknown type " + strconv.Quote(typ))
	}
	c := Capture{Name: name, Expr: expr, Kind: k.kind, Size: k.size}
	loc = loc[len("arg"):]
	i := strings.IndexAny(loc, "+-")
	if i < 0 {
		i = len(loc)
	}
	reg, err := strconv.ParseUint(loc[:i], 10, 8)
	if err != nil {
		return bad("bad register index")
	}
	c.Reg = int(reg)
	rest := loc[i:]
	if rest == "" {
		c.InReg = true
		return c, nil
	}
	first, second, deref := strings.Cut(rest, "->")
	if first == "" {
		first = "+0"
	}
	if first[0] != '+' {
		return bad("want +OFFSET after the register")
	}
	if c.Offset, err = strconv.ParseInt(first[1:], 0, 32); err != nil {
		return bad("bad offset " + strconv.Quote(first[1:]))
	}
	if deref {
		c.Deref = true
		if c.DerefOffset, err = strconv.ParseInt(strings.TrimPrefix(second, "+"), 0, 32); err != nil {
			return bad("bad offset " + strconv.Quote(second))
		}
	}
	return c, nil
}

func parseRawReturn(name, expr string) (Capture, error) {
	bad := func(why string) (Capture, error) {
		return Capture{}, fmt.Errorf("capture %q: %s (want retN:TYPE, TYPE one of u8-u64, s8-s64, bool, ptr, error)", expr, why)
	}
	loc, typ, _ := strings.Cut(expr, ":")
	k, ok := rawKinds[typ]
	if (!ok || k.kind == KindString) && typ != "error" {
		return bad("unknown type " + strconv.Quote(typ))
	}
	reg, err := strconv.ParseUint(loc[len("ret"):], 10, 8)
	if err != nil {
		return bad("bad register index")
	}
	if typ == "error" {
		c := ErrorResultIn(int(reg))
		c.Name = name
		return c, nil
	}
	return Capture{Name: name, Expr: expr, Reg: int(reg), InReg: true, AtReturn: true, Kind: k.kind, Size: k.size}, nil
}

// Raw returns the capture in the raw form ParseRawCapture reads: where it
// is, whatever expression it was resolved from.
func (c Capture) Raw() string {
	var typ string
	switch c.Kind {
	case KindUint:
		typ = fmt.Sprintf("u%d", 8*c.Size)
	case KindInt:
		typ = fmt.Sprintf("s%d", 8*c.Size)
	default:
		typ = string(c.Kind)
	}
	switch {
	case c.AtReturn:
		return fmt.Sprintf("ret%d:%s", c.Reg, typ)
	case c.InReg:
		return fmt.Sprintf("arg%d:%s", c.Reg, typ)
	case c.Deref:
		return fmt.Sprintf("arg%d+%d->%d:%s", c.Reg, c.Offset, c.DerefOffset, typ)
	}
	return fmt.Sprintf("arg%d+%d:%s", c.Reg, c.Offset, typ)
}

// Validate checks what the BPF programs rely on.
func (c Capture) Validate() error {
	if c.Name == "" {
		return errors.New("capture without a name")
	}
	// The name becomes an attribute key and appears in errors, which are
	// one line.
	if strings.ContainsFunc(c.Name, unicode.IsControl) {
		return fmt.Errorf("capture %q: control character in the name", c.Name)
	}
	switch {
	case c.Kind != KindUint && c.Kind != KindInt && c.Kind != KindBool && c.Kind != KindPtr && c.Kind != KindString && c.Kind != KindError:
		return fmt.Errorf("capture %s: unknown kind %q", c.Name, c.Kind)
	case c.AtReturn && (!c.InReg || c.Kind == KindString), c.Kind == KindError && !c.AtReturn:
		return fmt.Errorf("capture %s: a result is read from its register, as an integer, bool, pointer or error", c.Name)
	case (c.Kind == KindString || c.Kind == KindError) && c.Size != 16,
		c.Kind != KindString && c.Kind != KindError && (c.Size < 1 || c.Size > 8):
		return fmt.Errorf("capture %s: bad size %d for %s", c.Name, c.Size, c.Kind)
	case c.Reg < 0 || c.Reg > 15:
		return fmt.Errorf("capture %s: bad register index %d", c.Name, c.Reg)
	case c.InReg && (c.Offset != 0 || c.Deref):
		return fmt.Errorf("capture %s: a register value has no offsets", c.Name)
	case c.Offset < -1<<31 || c.Offset > 1<<31-1 || c.DerefOffset < -1<<31 || c.DerefOffset > 1<<31-1:
		return fmt.Errorf("capture %s: offset out of range", c.Name)
	}
	return nil
}

// A Param is one parameter of a function, as Go's register ABI passes it at
// the entry.
type Param struct {
	Name string
	Type string
	// Regs are the integer registers holding the parameter, in order
	// (a string: data pointer, length); empty for parameters passed on
	// the stack or only in floating-point registers.
	Regs    []int
	OnStack bool

	typ dwarf.Type
}

// A CaptureResolver resolves capture expressions against one executable.
// It reads the DWARF it needs once, on first use: the compile units of the
// functions' packages and the types the expressions name (see
// readDebugInfo).
// It is not safe for concurrent use.
type CaptureResolver struct {
	f    *symbols.File
	fns  []symbols.Func // read together on first use
	info *debugInfo
	// subprograms are the offsets of the DWARF entries of the functions
	// found, by name.
	subprograms map[string]uint64
	types       *typeReader
	err         error
}

// NewCaptureResolver returns a resolver for f's functions. fns are the
// functions whose captures it will resolve: the DWARF of all of them is read
// in one pass. Others can be resolved too, at the cost of another pass.
func NewCaptureResolver(f *symbols.File, fns []symbols.Func) *CaptureResolver {
	return &CaptureResolver{f: f, fns: fns}
}

// Params returns the parameters of fn, receiver first, from DWARF, with the
// registers the register ABI assigns them.
func (r *CaptureResolver) Params(fn symbols.Func) ([]Param, error) {
	return r.paramsOrResults(fn, false)
}

// Results returns the results of fn from DWARF, with the registers they are
// in at a RET: the register ABI assigns results as it does parameters,
// from the first register again.
func (r *CaptureResolver) Results(fn symbols.Func) ([]Param, error) {
	return r.paramsOrResults(fn, true)
}

func (r *CaptureResolver) paramsOrResults(fn symbols.Func, results bool) (ps []Param, err error) {
	defer func() {
		if !catchPanics {
			return
		}
		if p := recover(); p != nil {
			ps, err = nil, fmt.Errorf("malformed DWARF: %v", p)
		}
	}()
	f := r.f
	if !f.HasDWARF {
		return nil, ErrNoDWARF
	}
	a, err := NewRegAssigner(f.Arch)
	if err != nil {
		return nil, err
	}
	if err := checkRegABI(f); err != nil {
		return nil, err
	}
	params, err := retry(r, func() ([]Param, error) { return r.params(fn.Name, results) })
	if err != nil {
		return nil, err
	}
	for i := range params {
		p := &params[i]
		p.Regs, p.OnStack = a.Assign(words(p.typ))
	}
	return params, nil
}

// checkRegABI refuses Go releases that pass arguments on the stack: amd64
// has the register ABI since Go 1.17, arm64 since Go 1.18.
func checkRegABI(f *symbols.File) error {
	v := f.GoVersion
	if v == "" {
		return nil
	}
	if i := strings.IndexAny(v, " +-"); i >= 0 {
		v = v[:i]
	}
	first := "v1.17"
	if f.Arch == "arm64" {
		first = "v1.18"
	}
	if sv := "v" + strings.TrimPrefix(v, "go"); semver.IsValid(sv) && semver.Compare(sv, first) < 0 {
		return fmt.Errorf("%s passes arguments on the stack; captures need the register ABI (go%s or later)", f.GoVersion, first[1:])
	}
	return nil
}

// funcPackage returns the import path of a function's package:
// "a/b/c.(*T).m" -> "a/b/c", "a/b.F[x/y.T]" -> "a/b".
func funcPackage(name string) string {
	head, _, _ := strings.Cut(name, "[")
	slash := strings.LastIndexByte(head, '/') + 1
	if dot := strings.IndexByte(name[slash:], '.'); dot >= 0 {
		return name[:slash+dot]
	}
	return name
}

// retry runs fn, and again after reading every compile unit if fn needed
// an entry outside the units read: a function or type where the Go linker
// would not have put it.
func retry[T any](r *CaptureResolver, fn func() (T, error)) (T, error) {
	v, err := fn()
	if !errors.Is(err, errNotRead) {
		return v, err
	}
	if err := r.read(true); err != nil {
		var zero T
		return zero, err
	}
	return fn()
}

// params reads the formal parameters, or the results, of the named function.
func (r *CaptureResolver) params(name string, results bool) ([]Param, error) {
	off, err := r.subprogram(name)
	if err != nil {
		return nil, err
	}
	e, u, next, err := r.info.entryAt(off)
	if err != nil {
		return nil, fmt.Errorf("read DWARF: %w", err)
	}
	var ps []Param
	err = u.children(e, next, func(c die, _, _ int) (bool, error) {
		if c.tag != dwarf.TagFormalParameter || c.varParam != results {
			return true, nil
		}
		// Go 1.26 writes some results of a function with a defer twice,
		// as two entries of one name; the names in a signature are
		// unique (blank ones are ~pN and ~rN), and counting both would
		// move every later result to the wrong registers.
		if slices.ContainsFunc(ps, func(p Param) bool { return p.Name == c.name }) {
			return true, nil
		}
		if !c.hasType {
			return false, fmt.Errorf("%s: parameter %s has no type", name, c.name)
		}
		t, err := r.types.typ(c.typ)
		if err == nil {
			err = r.types.complete(t)
		}
		if err != nil {
			return false, fmt.Errorf("%s: type of parameter %s: %w", name, c.name, err)
		}
		ps = append(ps, Param{Name: c.name, Type: t.String(), typ: t})
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return ps, nil
}

var errNoEntry = errors.New("no DWARF entry for the function")

// subprogram returns the offset of the named function's entry, reading the
// DWARF if it has not been read for that function.
func (r *CaptureResolver) subprogram(name string) (uint64, error) {
	if off, ok := r.subprograms[name]; ok {
		return off, nil
	}
	if r.err != nil {
		return 0, r.err
	}
	known := slices.ContainsFunc(r.fns, func(fn symbols.Func) bool { return fn.Name == name })
	if !known {
		r.fns = append(r.fns, symbols.Func{Name: name})
	}
	if r.info == nil || !known {
		if r.err = r.read(false); r.err != nil {
			return 0, r.err
		}
	}
	if off, ok := r.subprograms[name]; ok {
		return off, nil
	}
	if !r.info.all {
		// Not in its package's unit: generic instantiations may be
		// elsewhere.
		return 0, errNotRead
	}
	return 0, fmt.Errorf("%s: %w", name, errNoEntry)
}

// read reads the compile units of the functions' packages and of runtime,
// which holds every type, or every unit if all; it stops once it has every
// function's entry and the types of their parameters. Go emits one compile
// unit per package object, named by its import path.
func (r *CaptureResolver) read(all bool) error {
	pending := map[string]bool{}
	pkgs := map[string]bool{} // of the functions
	for _, fn := range r.fns {
		pending[fn.Name] = true
		pkgs[funcPackage(fn.Name)] = true
	}
	r.subprograms = map[string]uint64{}
	var need []uint64 // offsets of the parameters' types
	info, err := readDebugInfo(r.f, func(u *dwarfUnit) (keep, stop bool, err error) {
		if !all && !pkgs[u.name] && u.name != "runtime" {
			return false, false, nil
		}
		if len(pending) > 0 && (all || pkgs[u.name]) {
			found, err := u.subprograms(pending)
			if err != nil {
				return false, false, err
			}
			for name, off := range found {
				// The unit of the function's package comes first;
				// otherwise the first unit that has it.
				own := funcPackage(name) == u.name
				if _, ok := r.subprograms[name]; ok && !own {
					continue
				}
				r.subprograms[name] = off
				if !own {
					continue
				}
				delete(pending, name)
				types, err := u.paramTypes(off)
				if err != nil {
					return false, false, err
				}
				need = append(need, types...)
			}
		}
		// With every unit kept, types are read from anywhere: read on.
		stop = !all && len(pending) == 0 && !slices.ContainsFunc(need, func(off uint64) bool { return off >= u.end() })
		return true, stop, nil
	})
	if err != nil {
		return fmt.Errorf("read DWARF: %w", err)
	}
	info.all = all
	r.info, r.types = info, newTypeReader(info)
	return nil
}

// words splits a value of type t into the words the register ABI assigns;
// inRegs is false for a type it never puts in registers.
func words(t dwarf.Type) (ws []Word, inRegs bool) {
	var add func(t dwarf.Type) bool
	add = func(t dwarf.Type) bool {
		switch t := unwrap(t).(type) {
		case *dwarf.BoolType, *dwarf.IntType, *dwarf.UintType, *dwarf.CharType, *dwarf.UcharType,
			*dwarf.PtrType, *dwarf.FuncType, *dwarf.UnspecifiedType:
			if t.Size() != 0 {
				ws = append(ws, IntWord)
			}
			return true
		case *dwarf.FloatType:
			ws = append(ws, FloatWord)
			return true
		case *dwarf.ComplexType:
			ws = append(ws, FloatWord, FloatWord)
			return true
		case *dwarf.StructType:
			for _, f := range t.Field {
				if !add(f.Type) {
					return false
				}
			}
			return true
		case *dwarf.ArrayType:
			switch {
			case t.Count == 0:
				return true
			case t.Count == 1:
				return add(t.Type)
			}
			return t.Size() == 0
		}
		return false
	}
	inRegs = add(t)
	return ws, inRegs
}

func unwrap(t dwarf.Type) dwarf.Type {
	for {
		td, ok := t.(*dwarf.TypedefType)
		if !ok {
			return t
		}
		t = td.Type
	}
}

// Resolve resolves expr, a parameter name and a field path (e.ID,
// e.desiredPolicy.Revision), against fn's DWARF. The path may follow at
// most one pointer beyond the parameter itself. The raw form is parsed as
// it is.
//
// A result, retN or retN:TYPE (IsReturnExpr), is resolved by ResolveReturn.
func (r *CaptureResolver) Resolve(fn symbols.Func, name, expr string) (Capture, error) {
	if IsReturnExpr(expr) {
		return r.ResolveReturn(fn, name, expr)
	}
	if IsRawCapture(expr) {
		return ParseRawCapture(name, expr)
	}
	return retry(r, func() (Capture, error) {
		params, err := r.Params(fn)
		if err != nil {
			return Capture{}, fmt.Errorf("capture %q: %w", expr, err)
		}
		return resolveCapture(fn.Name, params, name, expr, r.types.complete)
	})
}

// IsReturnExpr reports whether expr names a result: retN, or retN:TYPE.
func IsReturnExpr(expr string) bool {
	n, _, _ := strings.Cut(expr, ":")
	d := strings.TrimPrefix(n, "ret")
	return d != n && d != "" && strings.Trim(d, "0123456789") == ""
}

// ResolveReturn resolves expr, retN, against fn's DWARF: the function's
// N-th result (from 0), an integer, bool or pointer, read at each RET. The
// raw form retN:TYPE names result register N and is parsed as it is.
func (r *CaptureResolver) ResolveReturn(fn symbols.Func, name, expr string) (Capture, error) {
	if !IsReturnExpr(expr) {
		return Capture{}, fmt.Errorf("capture-return %q: want retN, the N-th result from 0, or retN:TYPE, result register N", expr)
	}
	if IsRawCapture(expr) {
		return ParseRawCapture(name, expr)
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(expr, "ret"), 10, 8)
	if err != nil {
		return Capture{}, fmt.Errorf("capture-return %q: want retN, the N-th result from 0", expr)
	}
	rs, err := retry(r, func() ([]Param, error) { return r.Results(fn) })
	if err != nil {
		return Capture{}, fmt.Errorf("capture-return %q: %w", expr, err)
	}
	if int(n) >= len(rs) {
		return Capture{}, &ResultError{Expr: expr, Func: fn.Name, Results: rs}
	}
	p := rs[n]
	kind, size, ok := valueKind(p.typ)
	switch {
	case !ok || kind == KindString:
		return Capture{}, fmt.Errorf("capture-return %q: result %d of %s has type %s; supported: integers, bool, pointers", expr, n, fn.Name, p.Type)
	case p.OnStack || len(p.Regs) == 0:
		return Capture{}, fmt.Errorf("capture-return %q: result %d of %s (%s) is not in an integer register", expr, n, fn.Name, p.Type)
	}
	return Capture{Name: name, Expr: expr, Reg: p.Regs[0], InReg: true, AtReturn: true, Kind: kind, Size: size}, nil
}

// A ResultError reports a capture of a result the function does not have.
type ResultError struct {
	Expr    string
	Func    string
	Results []Param
}

func (e *ResultError) Error() string {
	rs := make([]string, len(e.Results))
	for i, p := range e.Results {
		rs[i] = fmt.Sprintf("ret%d %s", i, p.Type)
	}
	list := strings.Join(rs, ", ")
	if list == "" {
		list = "none"
	}
	return fmt.Sprintf("capture-return %q: %s has no such result (results: %s)", e.Expr, e.Func, list)
}

// ErrorResult returns the capture of fn's last result if its type is
// error, in registers; ok is false when fn does not return an error last.
func (r *CaptureResolver) ErrorResult(fn symbols.Func) (c Capture, ok bool, err error) {
	rs, err := retry(r, func() ([]Param, error) { return r.Results(fn) })
	if err != nil || len(rs) == 0 {
		return Capture{}, false, err
	}
	p := rs[len(rs)-1]
	if p.Type != "error" || p.OnStack || len(p.Regs) != 2 {
		return Capture{}, false, nil
	}
	return ErrorResultIn(p.Regs[0]), true, nil
}

// resolveCapture resolves expr against params; complete reads the fields
// of a struct reached through a pointer.
func resolveCapture(fn string, params []Param, name, expr string, complete func(dwarf.Type) error) (Capture, error) {
	path := strings.Split(expr, ".")
	var p *Param
	for i := range params {
		if params[i].Name == path[0] {
			p = &params[i]
		}
	}
	if p == nil {
		names := make([]string, len(params))
		for i, q := range params {
			names[i] = q.Name
		}
		return Capture{}, &CaptureError{Expr: expr, Missing: path[0], In: fn, Available: names}
	}
	fail := func(format string, args ...any) (Capture, error) {
		return Capture{}, fmt.Errorf("capture %q: %s", expr, fmt.Sprintf(format, args...))
	}
	if p.OnStack {
		return fail("argument %s (%s) is passed on the stack, not in registers", p.Name, p.Type)
	}
	if len(p.Regs) == 0 {
		return fail("argument %s (%s) is in no integer register", p.Name, p.Type)
	}
	c := Capture{Name: name, Expr: expr}
	if len(path) == 1 {
		kind, size, ok := valueKind(p.typ)
		if !ok {
			return fail("argument %s has type %s; supported: integers, bool, pointers, strings", p.Name, p.Type)
		}
		c.Reg, c.InReg, c.Kind, c.Size = p.Regs[0], true, kind, size
		return c, nil
	}
	pt, ok := unwrap(p.typ).(*dwarf.PtrType)
	if !ok {
		return fail("argument %s has type %s; fields can be read only through a pointer", p.Name, p.Type)
	}
	c.Reg = p.Regs[0]
	t := unwrap(pt.Type)
	if err := complete(t); err != nil {
		return Capture{}, fmt.Errorf("capture %q: %w", expr, err)
	}
	where := pt.Type.String()
	off := int64(0)
	for i, field := range path[1:] {
		st, ok := t.(*dwarf.StructType)
		if !ok || isStringType(t) {
			return fail("%s is not a struct", where)
		}
		var m *dwarf.StructField
		for _, sf := range st.Field {
			if sf.Name == field {
				m = sf
			}
		}
		if m == nil {
			names := make([]string, len(st.Field))
			for i, sf := range st.Field {
				names[i] = sf.Name
			}
			return Capture{}, &CaptureError{Expr: expr, Missing: field, Field: true, In: st.StructName, Available: names}
		}
		off += m.ByteOffset
		t = unwrap(m.Type)
		where = strings.Join(path[:i+2], ".")
		if i+2 == len(path) {
			break
		}
		if ptr, ok := t.(*dwarf.PtrType); ok {
			if c.Deref {
				return fail("%s is a second pointer to follow; at most one is supported", where)
			}
			c.Deref, c.Offset, off = true, off, 0
			t = unwrap(ptr.Type)
			if err := complete(t); err != nil {
				return Capture{}, fmt.Errorf("capture %q: %w", expr, err)
			}
		}
	}
	kind, size, ok := valueKind(t)
	if !ok {
		return fail("%s has type %s; supported: integers, bool, pointers, strings", where, t)
	}
	if c.Deref {
		c.DerefOffset = off
	} else {
		c.Offset = off
	}
	c.Kind, c.Size = kind, size
	if c.Offset > 1<<31-1 || c.DerefOffset > 1<<31-1 {
		return fail("offset out of range")
	}
	return c, nil
}

// isStringType reports whether t is a string: Go writes string, and every
// named string type (type ResourceID string), as a struct of a *uint8 str
// and an int len, named by the type.
func isStringType(t dwarf.Type) bool {
	st, ok := t.(*dwarf.StructType)
	if !ok || len(st.Field) != 2 {
		return false
	}
	if st.StructName == "string" {
		return true
	}
	str, n := st.Field[0], st.Field[1]
	p, ok := unwrap(str.Type).(*dwarf.PtrType)
	if !ok || str.Name != "str" || str.ByteOffset != 0 || n.Name != "len" || n.ByteOffset != 8 {
		return false
	}
	_, byteData := unwrap(p.Type).(*dwarf.UintType)
	_, count := unwrap(n.Type).(*dwarf.IntType)
	return byteData && p.Type.Size() == 1 && count && n.Type.Size() == 8
}

// valueKind says how a value of type t is captured.
func valueKind(t dwarf.Type) (ValueKind, int, bool) {
	t = unwrap(t)
	size := int(t.Size())
	switch t.(type) {
	case *dwarf.UintType, *dwarf.UcharType:
		return KindUint, size, size >= 1 && size <= 8
	case *dwarf.IntType, *dwarf.CharType:
		return KindInt, size, size >= 1 && size <= 8
	case *dwarf.BoolType:
		return KindBool, 1, size == 1
	case *dwarf.PtrType:
		return KindPtr, 8, size == 8
	}
	if isStringType(t) {
		return KindString, 16, true
	}
	return "", 0, false
}

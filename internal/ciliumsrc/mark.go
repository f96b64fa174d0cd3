package ciliumsrc

import (
	"context"
	"fmt"
	"go/ast"
	"go/build"
	"go/types"
	"slices"
	"strconv"
	"strings"
)

// A checker computes layouts in one release for one architecture and
// standard library: it marks what the requested functions and captures
// need, then writes and type-checks the pruned packages.
type checker struct {
	ctx   context.Context
	rel   *Release
	std   *StdLib
	arch  string
	build build.Context
	src   *sourceCache
	pkgs  map[string]*srcPkg // by import path
	// marked
	consts map[*ast.GenDecl]bool
	roots  []*root
	// checked packages, by import path
	checked map[string]*types.Package
	sizes   types.Sizes
}

// A root is a requested function: its declaration and the captures on it.
type root struct {
	fn       FuncName
	decl     *ast.FuncDecl
	file     *srcFile
	captures [][2]string // name, expression
	// ident is the name of the function standing for it in the pruned
	// package: the receiver, if any, becomes its first parameter.
	ident string
}

// unsafePkg stands for package unsafe, which has no source: go/types has
// it built in.
var unsafePkg = &srcPkg{path: "unsafe"}

// pkg returns the package at import path, parsed; fromStd: imported by
// the standard library, which has its own copies of the golang.org/x
// packages it imports.
func (c *checker) pkg(path string, fromStd bool) (*srcPkg, error) {
	if path == "unsafe" {
		return unsafePkg, nil
	}
	first, _, _ := strings.Cut(path, "/")
	std := !strings.Contains(first, ".")
	key := path
	if fromStd && !std {
		key, std = "vendor/"+path, true
	}
	if p, ok := c.pkgs[key]; ok {
		return p, nil
	}
	dir, err := c.rel.dir(c.ctx, c.std, path, fromStd)
	if err != nil {
		return nil, err
	}
	p, err := c.src.loadPackage(&c.build, key, dir, std)
	if err != nil {
		return nil, err
	}
	c.pkgs[key] = p
	return p, nil
}

// importOf returns the package a file refers to by qualifier q.
func (c *checker) importOf(f *srcFile, q string) (*srcPkg, error) {
	if path, ok := f.imports[q]; ok {
		return c.pkg(path, f.pkg.std)
	}
	// An import's qualifier is its name if it has one, else the name in
	// the imported package's package clause, which is usually the last
	// element of its path: try those first, so that only the package
	// needed is read (and its module downloaded).
	var unnamed []string
	for _, s := range f.ast.Imports {
		path, err := strconv.Unquote(s.Path.Value)
		if err != nil {
			return nil, err
		}
		if s.Name != nil {
			if s.Name.Name == q {
				f.imports[q] = path
				return c.pkg(path, f.pkg.std)
			}
			continue
		}
		unnamed = append(unnamed, path)
	}
	guess := func(path string) bool {
		elems := strings.Split(path, "/")
		last := elems[len(elems)-1]
		if len(elems) > 1 && len(last) > 1 && last[0] == 'v' && strings.Trim(last[1:], "0123456789") == "" {
			last = elems[len(elems)-2]
		}
		last, _, _ = strings.Cut(last, ".")
		last = strings.TrimPrefix(last, "go-")
		return strings.ReplaceAll(last, "-", "") == q
	}
	for _, likely := range []bool{true, false} {
		for _, path := range unnamed {
			if guess(path) != likely {
				continue
			}
			p, err := c.pkg(path, f.pkg.std)
			if err != nil {
				return nil, err
			}
			if name, err := c.packageName(p); err != nil {
				return nil, err
			} else if name == q {
				f.imports[q] = path
				return p, nil
			}
		}
	}
	return nil, fmt.Errorf("%s: no import named %s", c.src.fset.Position(f.ast.Package), q)
}

func (c *checker) packageName(p *srcPkg) (string, error) {
	if p == unsafePkg {
		return "unsafe", nil
	}
	return p.files[0].ast.Name.Name, nil
}

// A scope is where a type expression is: its file and the type parameters
// of the declaration around it.
type scope struct {
	f       *srcFile
	tparams map[string]int
	byValue []bool // of the type parameters, set as they are found by value
}

// markName marks what name declares in p: a type's layout, or a constant
// declaration.
func (c *checker) markName(p *srcPkg, name string) error {
	if p == unsafePkg {
		return nil
	}
	if td, ok := p.types[name]; ok {
		return c.markType(td)
	}
	if gd, ok := p.consts[name]; ok {
		return c.markConst(p, gd)
	}
	if types.Universe.Lookup(name) != nil {
		return nil
	}
	return fmt.Errorf("%s.%s: not declared for linux/%s", p.path, name, c.arch)
}

// markType marks a type whose layout is needed, and what its layout needs.
func (c *checker) markType(td *typeDecl) error {
	if td.full {
		return nil
	}
	td.full = true
	s := scope{f: td.file}
	if tp := td.spec.TypeParams; tp != nil {
		s.tparams = map[string]int{}
		for _, field := range tp.List {
			for _, n := range field.Names {
				s.tparams[n.Name] = len(s.tparams)
			}
		}
		s.byValue = make([]bool, len(s.tparams))
	}
	td.byValue = s.byValue
	return c.walk(s, td.spec.Type)
}

// markConst keeps a constant declaration, whole: its specs may repeat
// the previous one's expression, and count with iota.
func (c *checker) markConst(p *srcPkg, gd *ast.GenDecl) error {
	if c.consts[gd] {
		return nil
	}
	c.consts[gd] = true
	s := scope{f: p.fileOf[gd]}
	for _, spec := range gd.Specs {
		vs := spec.(*ast.ValueSpec)
		if vs.Type != nil {
			if err := c.walk(s, vs.Type); err != nil {
				return err
			}
		}
		for _, v := range vs.Values {
			if err := c.walkConst(s, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// walk marks what the layout of type expression e needs: the types it
// holds by value. Pointers, maps, channels, slices, functions and
// interfaces are the same size whatever they refer to.
func (c *checker) walk(s scope, e ast.Expr) error {
	switch e := e.(type) {
	case *ast.Ident:
		if i, ok := s.tparams[e.Name]; ok {
			s.byValue[i] = true
			return nil
		}
		return c.markName(s.f.pkg, e.Name)
	case *ast.SelectorExpr:
		p, name, err := c.qualified(s, e)
		if err != nil {
			return err
		}
		return c.markName(p, name)
	case *ast.ParenExpr:
		return c.walk(s, e.X)
	case *ast.StarExpr, *ast.MapType, *ast.ChanType, *ast.FuncType, *ast.InterfaceType, *ast.Ellipsis:
		return nil
	case *ast.ArrayType:
		if e.Len == nil {
			return nil
		}
		if err := c.walkConst(s, e.Len); err != nil {
			return err
		}
		return c.walk(s, e.Elt)
	case *ast.StructType:
		for _, f := range e.Fields.List {
			if err := c.walk(s, f.Type); err != nil {
				return err
			}
		}
		return nil
	case *ast.IndexExpr, *ast.IndexListExpr:
		base, args := instance(e)
		td, err := c.generic(s, base)
		if err != nil {
			return err
		}
		for i, a := range args {
			if i < len(td.byValue) && td.byValue[i] {
				if err := c.walk(s, a); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return fmt.Errorf("%s: unsupported type expression %T", c.src.fset.Position(e.Pos()), e)
}

// instance splits an instantiation G[A, B].
func instance(e ast.Expr) (ast.Expr, []ast.Expr) {
	switch e := e.(type) {
	case *ast.IndexExpr:
		return e.X, []ast.Expr{e.Index}
	case *ast.IndexListExpr:
		return e.X, e.Indices
	}
	return e, nil
}

// generic marks and returns the generic type an instantiation names.
func (c *checker) generic(s scope, e ast.Expr) (*typeDecl, error) {
	p, name := s.f.pkg, ""
	switch e := e.(type) {
	case *ast.Ident:
		name = e.Name
	case *ast.SelectorExpr:
		var err error
		if p, name, err = c.qualified(s, e); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%s: unsupported instantiation", c.src.fset.Position(e.Pos()))
	}
	td, ok := p.types[name]
	if !ok {
		return nil, fmt.Errorf("%s.%s: no generic type of that name for linux/%s", p.path, name, c.arch)
	}
	return td, c.markType(td)
}

// qualified resolves q.Name to q's package.
func (c *checker) qualified(s scope, e *ast.SelectorExpr) (*srcPkg, string, error) {
	q, ok := e.X.(*ast.Ident)
	if !ok {
		return nil, "", fmt.Errorf("%s: unsupported selector", c.src.fset.Position(e.Pos()))
	}
	p, err := c.importOf(s.f, q.Name)
	return p, e.Sel.Name, err
}

// walkConst marks what a constant expression (an array length, a
// constant's value) refers to.
func (c *checker) walkConst(s scope, e ast.Expr) error {
	var err error
	ast.Inspect(e, func(n ast.Node) bool {
		if err != nil {
			return false
		}
		switch n := n.(type) {
		case *ast.SelectorExpr:
			var p *srcPkg
			var name string
			if p, name, err = c.qualified(s, n); err == nil {
				err = c.markName(p, name)
			}
			return false
		case *ast.Ident:
			err = c.markName(s.f.pkg, n.Name)
		}
		return true
	})
	return err
}

// addRoot marks a requested function: the types of its receiver,
// parameters and results held by value, and the types its captures read
// through pointers.
func (c *checker) addRoot(fn FuncName, captures [][2]string) error {
	p, err := c.pkg(fn.Pkg, false)
	if err != nil {
		return err
	}
	decl, ok := p.funcs[fn.key()]
	if !ok || fn.Recv != "" && isPtrRecv(decl) != fn.Ptr {
		return fmt.Errorf("%s: not declared in cilium %s for linux/%s", fn, c.rel.Version, c.arch)
	}
	if decl.Type.TypeParams != nil || decl.Recv != nil && recvHasTypeParams(decl.Recv.List[0].Type) {
		return fmt.Errorf("%s: generic functions are not supported", fn)
	}
	r := &root{fn: fn, decl: decl, file: p.fileOf[decl], captures: captures, ident: fmt.Sprintf("ciliumsrc_root%d", len(c.roots))}
	s := scope{f: r.file}
	for _, f := range slices.Concat(params(decl), results(decl)) {
		if err := c.walk(s, f.Type); err != nil {
			return err
		}
	}
	for _, nc := range captures {
		if err := c.markPath(r, nc[1]); err != nil {
			return fmt.Errorf("%s: capture %s=%s: %w", fn, nc[0], nc[1], err)
		}
	}
	c.roots = append(c.roots, r)
	return nil
}

func recvHasTypeParams(e ast.Expr) bool {
	for {
		switch t := e.(type) {
		case *ast.StarExpr:
			e = t.X
		case *ast.ParenExpr:
			e = t.X
		case *ast.IndexExpr, *ast.IndexListExpr:
			return true
		default:
			return false
		}
	}
}

// params are a function's receiver and parameters, in the order of the
// register ABI.
func params(d *ast.FuncDecl) []*ast.Field {
	var fs []*ast.Field
	if d.Recv != nil {
		fs = append(fs, d.Recv.List...)
	}
	return append(fs, d.Type.Params.List...)
}

// results are a function's results, in the order of the register ABI.
func results(d *ast.FuncDecl) []*ast.Field {
	if d.Type.Results == nil {
		return nil
	}
	return d.Type.Results.List
}

// markPath marks the structs a capture expression (e.ID,
// e.desiredPolicy.Revision) reads through pointers: their layouts are
// needed although the pointers to them are not.
func (c *checker) markPath(r *root, expr string) error {
	path := strings.Split(expr, ".")
	var t ast.Expr
	for _, f := range params(r.decl) {
		for _, n := range f.Names {
			if n.Name == path[0] {
				t = f.Type
			}
		}
	}
	if t == nil {
		// Left out by Resolve.
		return nil
	}
	s := scope{f: r.file}
	for _, field := range path[1:] {
		// Through a pointer, or held by value: either way the struct's
		// layout is needed.
		if star, ok := unparen(t).(*ast.StarExpr); ok {
			t = star.X
		}
		st, fs, err := c.structOf(s, t)
		if err != nil {
			return err
		}
		s = fs
		t = nil
		for _, f := range st.Fields.List {
			for _, n := range fieldNames(f) {
				if n == field {
					t = f.Type
				}
			}
		}
		if t == nil {
			return fmt.Errorf("no field %s", field)
		}
	}
	return nil
}

func unparen(e ast.Expr) ast.Expr {
	for {
		p, ok := e.(*ast.ParenExpr)
		if !ok {
			return e
		}
		e = p.X
	}
}

// structOf marks the named type t and returns the struct type it is
// defined as, with the scope it is written in.
func (c *checker) structOf(s scope, t ast.Expr) (*ast.StructType, scope, error) {
	for range 16 {
		switch e := unparen(t).(type) {
		case *ast.StructType:
			return e, s, nil
		case *ast.Ident, *ast.SelectorExpr:
			p, name := s.f.pkg, ""
			if id, ok := e.(*ast.Ident); ok {
				name = id.Name
			} else {
				var err error
				if p, name, err = c.qualified(s, e.(*ast.SelectorExpr)); err != nil {
					return nil, s, err
				}
			}
			td, ok := p.types[name]
			if !ok {
				return nil, s, fmt.Errorf("%s.%s is not a struct type", p.path, name)
			}
			if err := c.markType(td); err != nil {
				return nil, s, err
			}
			if td.spec.TypeParams != nil {
				return nil, s, fmt.Errorf("%s.%s: fields of generic types are not supported", p.path, name)
			}
			t, s = td.spec.Type, scope{f: td.file}
		default:
			return nil, s, fmt.Errorf("%s: fields are read only from structs", c.src.fset.Position(t.Pos()))
		}
	}
	return nil, s, fmt.Errorf("%s: too many type definitions", c.src.fset.Position(t.Pos()))
}

// fieldNames are the names of a struct field: an embedded field is named
// by its type.
func fieldNames(f *ast.Field) []string {
	if len(f.Names) > 0 {
		names := make([]string, len(f.Names))
		for i, n := range f.Names {
			names[i] = n.Name
		}
		return names
	}
	return []string{typeName(f.Type)}
}

// typeName is the name of the type an expression names, without pointer,
// parentheses, type arguments or package: an embedded field's name, a
// receiver's type ("*T[K, V]" -> "T").
func typeName(e ast.Expr) string {
	for {
		switch t := e.(type) {
		case *ast.StarExpr:
			e = t.X
		case *ast.ParenExpr:
			e = t.X
		case *ast.IndexExpr:
			e = t.X
		case *ast.IndexListExpr:
			e = t.X
		case *ast.SelectorExpr:
			return t.Sel.Name
		case *ast.Ident:
			return t.Name
		default:
			return ""
		}
	}
}

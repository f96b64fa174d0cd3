package ciliumsrc

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/types"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// A renderer writes one file of a pruned package.
type renderer struct {
	c    *checker
	b    strings.Builder
	used map[string]bool // qualifiers written
}

// render writes the type expression e, held by value (or kept behind a
// pointer), in scope s: pointers, maps, channels, slices, functions and
// interfaces become ones of the same shape that name no other type.
func (r *renderer) render(s scope, e ast.Expr) {
	b := &r.b
	switch e := e.(type) {
	case *ast.Ident:
		b.WriteString(e.Name)
	case *ast.SelectorExpr:
		q := e.X.(*ast.Ident).Name
		r.used[q] = true
		b.WriteString(q + "." + e.Sel.Name)
	case *ast.ParenExpr:
		b.WriteString("(")
		r.render(s, e.X)
		b.WriteString(")")
	case *ast.StarExpr:
		if r.kept(s, e.X) {
			b.WriteString("*")
			r.render(s, e.X)
		} else {
			b.WriteString("*struct{}")
		}
	case *ast.ArrayType:
		if e.Len == nil {
			b.WriteString("[]struct{}")
			return
		}
		b.WriteString("[")
		r.expr(e.Len)
		b.WriteString("]")
		r.render(s, e.Elt)
	case *ast.MapType:
		b.WriteString("map[struct{}]struct{}")
	case *ast.ChanType:
		b.WriteString("chan struct{}")
	case *ast.FuncType:
		b.WriteString("func()")
	case *ast.InterfaceType:
		b.WriteString("interface{}")
	case *ast.Ellipsis:
		b.WriteString("...struct{}")
	case *ast.StructType:
		b.WriteString("struct {\n")
		for _, f := range e.Fields.List {
			if len(f.Names) == 0 {
				if star, ok := unparen(f.Type).(*ast.StarExpr); ok && !r.kept(s, star.X) {
					// An embedded pointer keeps its field name.
					b.WriteString(typeName(f.Type) + " *struct{}\n")
					continue
				}
			}
			for i, n := range f.Names {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString(n.Name)
			}
			b.WriteString(" ")
			r.render(s, f.Type)
			b.WriteString("\n")
		}
		b.WriteString("}")
	case *ast.IndexExpr, *ast.IndexListExpr:
		base, args := instance(e)
		r.render(s, base)
		td, _ := r.c.lookup(s, base)
		b.WriteString("[")
		for i, a := range args {
			if i > 0 {
				b.WriteString(", ")
			}
			if td != nil && i < len(td.byValue) && td.byValue[i] {
				r.render(s, a)
			} else {
				b.WriteString("struct{}")
			}
		}
		b.WriteString("]")
	default:
		// walk refused it before anything was rendered.
		panic(fmt.Sprintf("render %T", e))
	}
}

// kept reports whether a pointer to t is written as such: t is a named
// type whose layout is needed anyway (a capture reads through it).
func (r *renderer) kept(s scope, t ast.Expr) bool {
	switch t := unparen(t).(type) {
	case *ast.Ident:
		if _, ok := s.tparams[t.Name]; ok {
			return false
		}
	case *ast.SelectorExpr:
	default:
		return false
	}
	td, _ := r.c.lookup(s, t)
	return td != nil && td.full && td.spec.TypeParams == nil
}

// expr writes a constant expression, or a whole constant declaration, as
// it is in the source.
func (r *renderer) expr(e ast.Node) {
	ast.Inspect(e, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if q, ok := sel.X.(*ast.Ident); ok {
				r.used[q.Name] = true
			}
		}
		return true
	})
	var buf bytes.Buffer
	printer.Fprint(&buf, r.c.src.fset, e)
	r.b.Write(buf.Bytes())
}

// lookup returns the type declaration a name refers to, if any.
func (c *checker) lookup(s scope, e ast.Expr) (*typeDecl, error) {
	switch e := unparen(e).(type) {
	case *ast.Ident:
		return s.f.pkg.types[e.Name], nil
	case *ast.SelectorExpr:
		p, name, err := c.qualified(s, e)
		if err != nil || p == unsafePkg {
			return nil, err
		}
		return p.types[name], nil
	}
	return nil, nil
}

// prune writes the package p pruned to what is marked in it, parsed.
func (c *checker) prune(p *srcPkg) ([]*ast.File, error) {
	var files []*ast.File
	for _, f := range p.files {
		r := &renderer{c: c, used: map[string]bool{}}
		n := 0
		for _, d := range f.ast.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok {
				continue
			}
			if c.consts[gd] {
				r.expr(gd)
				r.b.WriteString("\n")
				n++
				continue
			}
			for _, spec := range gd.Specs {
				ts, ok := spec.(*ast.TypeSpec)
				if !ok || !p.types[ts.Name.Name].full || p.types[ts.Name.Name].spec != ts {
					continue
				}
				r.typeSpec(p.types[ts.Name.Name])
				n++
			}
		}
		for _, rt := range c.roots {
			if rt.file == f {
				r.root(rt)
				n++
			}
		}
		if n == 0 {
			continue
		}
		var src strings.Builder
		fmt.Fprintf(&src, "package %s\n", f.ast.Name.Name)
		for _, q := range slices.Sorted(maps.Keys(r.used)) {
			imp, err := c.importOf(f, q)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(&src, "import %s %s\n", q, strconv.Quote(imp.path))
		}
		src.WriteString(r.b.String())
		name := filepath.Join("pruned", p.path, filepath.Base(c.src.fset.Position(f.ast.Package).Filename))
		af, err := parser.ParseFile(c.src.fset, name, src.String(), parser.SkipObjectResolution)
		if err != nil {
			return nil, fmt.Errorf("pruned %s: %w\n%s", p.path, err, src.String())
		}
		files = append(files, af)
	}
	return files, nil
}

func (r *renderer) typeSpec(td *typeDecl) {
	s := scope{f: td.file}
	b := &r.b
	b.WriteString("type " + td.spec.Name.Name)
	if tp := td.spec.TypeParams; tp != nil {
		s.tparams = map[string]int{}
		var names []string
		for _, f := range tp.List {
			for _, n := range f.Names {
				s.tparams[n.Name] = len(names)
				names = append(names, n.Name)
			}
		}
		// Constraints are not kept: nothing is checked against them.
		b.WriteString("[" + strings.Join(names, ", ") + " any]")
	}
	if td.spec.Assign.IsValid() {
		b.WriteString(" =")
	}
	b.WriteString(" ")
	r.render(s, td.spec.Type)
	b.WriteString("\n")
}

// root writes a requested function as a plain function of its receiver
// and parameters, in that order, which the register ABI assigns alike,
// with its results.
func (r *renderer) root(rt *root) {
	s := scope{f: rt.file}
	b := &r.b
	b.WriteString("func " + rt.ident + "(")
	for i, f := range params(rt.decl) {
		if i > 0 {
			b.WriteString(", ")
		}
		names := []string{"_"}
		if len(f.Names) > 0 {
			names = names[:0]
			for _, n := range f.Names {
				names = append(names, n.Name)
			}
		}
		b.WriteString(strings.Join(names, ", ") + " ")
		r.render(s, f.Type)
	}
	b.WriteString(") (")
	for i, f := range results(rt.decl) {
		for j := range max(len(f.Names), 1) {
			if i+j > 0 {
				b.WriteString(", ")
			}
			r.render(s, f.Type)
		}
	}
	// A body that does not return: the results need no values.
	b.WriteString(") { panic(0) }\n")
}

// Import type-checks the pruned package at path (a package key).
func (c *checker) Import(path string) (*types.Package, error) {
	if path == "unsafe" {
		return types.Unsafe, nil
	}
	if tp, ok := c.checked[path]; ok {
		return tp, nil
	}
	p, ok := c.pkgs[path]
	if !ok {
		return nil, fmt.Errorf("package %s was not marked", path)
	}
	files, err := c.prune(p)
	if err != nil {
		return nil, err
	}
	var errs []error
	conf := types.Config{
		Importer: c,
		Sizes:    c.sizes,
		Error:    func(err error) { errs = append(errs, err) },
	}
	tp, _ := conf.Check(path, c.src.fset, files, nil)
	if len(errs) > 0 {
		return nil, fmt.Errorf("type-check pruned %s: %w", path, errs[0])
	}
	c.checked[path] = tp
	return tp, nil
}

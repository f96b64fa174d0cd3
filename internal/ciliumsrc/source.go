package ciliumsrc

import (
	"fmt"
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// A FuncName is a function's name as the Go linker spells it:
// "a/b.(*T).m", "a/b.T.m" or "a/b.F".
type FuncName struct {
	Pkg  string // import path
	Recv string // receiver's type name, "" for a function
	Ptr  bool   // pointer receiver
	Name string
}

// ParseFuncName splits a linker name. Generic functions, closures and
// other compiler-made names are refused: the presets name declared
// functions.
func ParseFuncName(s string) (FuncName, error) {
	slash := strings.LastIndexByte(s, '/') + 1
	dot := strings.IndexByte(s[slash:], '.')
	if dot < 0 {
		return FuncName{}, fmt.Errorf("%q: not a qualified function name", s)
	}
	fn := FuncName{Pkg: s[:slash+dot]}
	rest := s[slash+dot+1:]
	if strings.ContainsAny(rest, "[]") {
		return FuncName{}, fmt.Errorf("%q: generic functions are not supported", s)
	}
	if strings.HasPrefix(rest, "(*") {
		recv, name, ok := strings.Cut(rest[2:], ").")
		if !ok {
			return FuncName{}, fmt.Errorf("%q: bad receiver", s)
		}
		fn.Recv, fn.Ptr, fn.Name = recv, true, name
	} else if recv, name, ok := strings.Cut(rest, "."); ok {
		fn.Recv, fn.Name = recv, name
	} else {
		fn.Name = rest
	}
	if !token.IsIdentifier(fn.Name) || fn.Recv != "" && !token.IsIdentifier(fn.Recv) {
		return FuncName{}, fmt.Errorf("%q: not a declared function", s)
	}
	return fn, nil
}

func (fn FuncName) String() string {
	switch {
	case fn.Recv == "":
		return fn.Pkg + "." + fn.Name
	case fn.Ptr:
		return fn.Pkg + ".(*" + fn.Recv + ")." + fn.Name
	}
	return fn.Pkg + "." + fn.Recv + "." + fn.Name
}

// key is how a package's function declarations are indexed.
func (fn FuncName) key() string {
	if fn.Recv == "" {
		return fn.Name
	}
	return fn.Recv + "." + fn.Name
}

// A srcPkg is one package's Go files for one build context, parsed, with
// its top-level declarations indexed.
type srcPkg struct {
	// path is the import path; "vendor/" and the import path for the
	// standard library's own copies of golang.org/x packages.
	path  string
	dir   string
	std   bool
	files []*srcFile
	types map[string]*typeDecl
	// consts are the const declarations by the names they declare.
	consts map[string]*ast.GenDecl
	funcs  map[string]*ast.FuncDecl // by FuncName.key
	// fileOf is the file of each function and const declaration.
	fileOf map[ast.Decl]*srcFile
}

type srcFile struct {
	pkg     *srcPkg
	ast     *ast.File
	imports map[string]string // qualifier -> import path, resolved lazily
}

// A typeDecl is one type declaration, and what marking found in it.
type typeDecl struct {
	spec *ast.TypeSpec
	file *srcFile
	// full: the type is held by value on the way to a capture, so its
	// layout is needed.
	full bool
	// byValue says, for a generic type, which type parameters it holds
	// by value: the others can be instantiated with anything.
	byValue []bool
}

// A sourceCache keeps the files parsed by path, for one release: each
// architecture and standard library selects its own files among them.
type sourceCache struct {
	fset  *token.FileSet
	files map[string]*ast.File
}

func newSourceCache() *sourceCache {
	return &sourceCache{fset: token.NewFileSet(), files: map[string]*ast.File{}}
}

func (c *sourceCache) parse(path string) (*ast.File, error) {
	if f, ok := c.files[path]; ok {
		return f, nil
	}
	f, err := parser.ParseFile(c.fset, path, nil, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	c.files[path] = f
	return f, nil
}

// buildContext is linux on arch without cgo, as cilium's releases are
// built, with the tags of a Go release.
func buildContext(arch string, tags []string) build.Context {
	ctx := build.Default
	ctx.GOOS, ctx.GOARCH = "linux", arch
	ctx.CgoEnabled = false
	ctx.BuildTags = nil
	ctx.ReleaseTags, ctx.ToolTags = nil, nil
	for _, t := range tags {
		if strings.HasPrefix(t, "go1.") {
			ctx.ReleaseTags = append(ctx.ReleaseTags, t)
		} else if t != "" {
			ctx.ToolTags = append(ctx.ToolTags, t)
		}
	}
	return ctx
}

// loadPackage parses the package in dir for the build context and indexes
// its declarations.
func (c *sourceCache) loadPackage(ctx *build.Context, path, dir string, std bool) (*srcPkg, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("package %s: %w", path, err)
	}
	p := &srcPkg{path: path, dir: dir, std: std, types: map[string]*typeDecl{}, consts: map[string]*ast.GenDecl{},
		funcs: map[string]*ast.FuncDecl{}, fileOf: map[ast.Decl]*srcFile{}}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		ok, err := ctx.MatchFile(dir, name)
		if err != nil {
			return nil, fmt.Errorf("package %s: %w", path, err)
		}
		if !ok {
			continue
		}
		af, err := c.parse(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(af.Imports, func(s *ast.ImportSpec) bool { return s.Path.Value == `"C"` }) {
			continue
		}
		f := &srcFile{pkg: p, ast: af, imports: map[string]string{}}
		p.files = append(p.files, f)
		for _, d := range af.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				p.funcs[funcKey(d)] = d
				p.fileOf[d] = f
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						p.types[s.Name.Name] = &typeDecl{spec: s, file: f}
					case *ast.ValueSpec:
						if d.Tok == token.CONST {
							for _, n := range s.Names {
								p.consts[n.Name] = d
							}
							p.fileOf[d] = f
						}
					}
				}
			}
		}
	}
	if len(p.files) == 0 {
		return nil, fmt.Errorf("package %s: no Go files for linux/%s in %s", path, ctx.GOARCH, dir)
	}
	return p, nil
}

// funcKey is FuncName.key of a declaration.
func funcKey(d *ast.FuncDecl) string {
	if d.Recv == nil || len(d.Recv.List) == 0 {
		return d.Name.Name
	}
	return typeName(d.Recv.List[0].Type) + "." + d.Name.Name
}

// isPtrRecv reports whether a method has a pointer receiver.
func isPtrRecv(d *ast.FuncDecl) bool {
	e := d.Recv.List[0].Type
	for {
		switch t := e.(type) {
		case *ast.ParenExpr:
			e = t.X
		case *ast.StarExpr:
			return true
		default:
			return false
		}
	}
}

// declares reports whether the release declares fn, parsing its package
// for linux/amd64.
func (r *Release) declares(src *sourceCache, fn FuncName) (bool, error) {
	if fn.Pkg != ModulePath && !strings.HasPrefix(fn.Pkg, ModulePath+"/") {
		return false, fmt.Errorf("%s: not a cilium package", fn.Pkg)
	}
	ctx := build.Default
	ctx.GOOS, ctx.GOARCH, ctx.CgoEnabled = "linux", "amd64", false
	p, err := src.loadPackage(&ctx, fn.Pkg, r.Module.Dir+strings.TrimPrefix(fn.Pkg, ModulePath), false)
	if err != nil {
		return false, err
	}
	d, ok := p.funcs[fn.key()]
	return ok && (fn.Recv == "" || isPtrRecv(d) == fn.Ptr), nil
}

// Declares reports which of the functions named (as the linker names them)
// the release declares, for linux.
func (r *Release) Declares(names []string) (map[string]bool, error) {
	src := newSourceCache()
	out := map[string]bool{}
	for _, n := range names {
		fn, err := ParseFuncName(n)
		if err != nil {
			return nil, err
		}
		ok, err := r.declares(src, fn)
		if err != nil {
			return nil, err
		}
		out[n] = ok
	}
	return out, nil
}

package ciliumsrc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
)

const (
	method = "github.com/cilium/cilium/pkg/a.(*T).Method"
	spill  = "github.com/cilium/cilium/pkg/a.Spill"
	value  = "github.com/cilium/cilium/pkg/a.State.Value"
	result = "github.com/cilium/cilium/pkg/a.(*T).Result"
)

// The captures the checker computes from the source of testdata/layout
// equal those args resolves from the DWARF of its build, on amd64 and
// arm64: fields after a sync.Map, a time.Time, an atomic.Pointer, a
// generic struct holding one type parameter by value, an array whose length
// is a constant of another package, embedded pointers and interfaces;
// through a pointer; named string types; arguments in registers after a
// struct passed by value, a value receiver; and an argument the register
// ABI puts on the stack, refused by both. The error results, where a
// function has one last in registers, are in the registers DWARF gives.
func TestResolveMatchesDWARF(t *testing.T) {
	ctx := context.Background()
	std, err := Std(ctx, localMinor(t))
	if err != nil {
		t.Fatal(err)
	}
	src, err := filepath.Abs(filepath.Join("testdata", "layout"))
	if err != nil {
		t.Fatal(err)
	}
	rel := &Release{Version: "v0.0.0", Module: Module{Path: ModulePath, Dir: src}}
	reqs := []Request{
		{Func: method, Captures: [][2]string{
			{"id", "t.ID"}, {"name", "t.Name"}, {"state", "t.State"}, {"flag", "t.Flag"}, {"count", "t.Count"},
			{"rev", "t.Inner.Rev"}, {"label", "t.Inner.Label"}, {"s", "s"}, {"n", "n"}, {"bool", "flag"}, {"t", "t"},
			{"gone", "nosuch"},
		}},
		{Func: value, Captures: [][2]string{{"state", "s"}, {"rev", "inner.Rev"}, {"label", "l"}}},
		{Func: spill},
		{Func: result},
		{Func: "github.com/cilium/cilium/pkg/a.Many"},
		{Func: "github.com/cilium/cilium/pkg/a.NotLast"},
	}
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			got, absent, err := rel.Resolve(ctx, arch, std, reqs)
			if err != nil {
				t.Fatal(err)
			}
			if len(absent) != 1 || absent[0] != method+" gone" {
				t.Errorf("absent %q, want the capture of a parameter that does not exist", absent)
			}
			f, err := symbols.Open(buildFake(t, src, arch))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			n := 0
			var errs []string // function and register of each error result
			for _, req := range reqs {
				fns, err := f.Funcs(req.Func)
				if err != nil {
					t.Fatal(err)
				}
				r := args.NewCaptureResolver(f, fns)
				for _, nc := range req.Captures {
					if nc[0] == "gone" {
						continue
					}
					want, err := r.Resolve(fns[0], nc[0], nc[1])
					if err != nil {
						t.Fatalf("%s %s: DWARF: %v", req.Func, nc[1], err)
					}
					var g *args.Capture
					for i, c := range got[req.Func] {
						if c.Name == nc[0] {
							g = &got[req.Func][i]
						}
					}
					if g == nil {
						t.Errorf("%s %s: not resolved from the source", req.Func, nc[1])
						continue
					}
					back, err := args.ParseRawCapture(g.Name, g.Expr)
					if err != nil || back != *g {
						t.Errorf("%s %s: raw form %q reads back as %+v, %v", req.Func, nc[1], g.Expr, back, err)
					}
					g.Expr, want.Expr = "", ""
					if *g != want {
						t.Errorf("%s %s: source says %+v, DWARF %+v", req.Func, nc[1], *g, want)
					}
					n++
				}
				want, ok, err := r.ErrorResult(fns[0])
				if err != nil {
					t.Fatalf("%s: DWARF: %v", req.Func, err)
				}
				var fromSrc []args.Capture
				for _, c := range got[req.Func] {
					if c.Kind == args.KindError {
						fromSrc = append(fromSrc, c)
					}
				}
				if ok && (len(fromSrc) != 1 || fromSrc[0] != want) || !ok && len(fromSrc) != 0 {
					t.Errorf("%s: error result from the source %+v, DWARF %+v (%v)", req.Func, fromSrc, want, ok)
				}
				if ok {
					errs = append(errs, fmt.Sprintf("%s %d", req.Func[strings.LastIndexByte(req.Func, '.')+1:], want.Reg))
				}
			}
			if n != 14 {
				t.Errorf("%d captures compared, want 14", n)
			}
			wantErrs := []string{"Method 0", "Result 4"}
			if arch == "arm64" {
				wantErrs = append(wantErrs, "Many 8")
			}
			if !slices.Equal(errs, wantErrs) {
				t.Errorf("error results %q, want %q", errs, wantErrs)
			}

			// A string after nine integer registers' worth of
			// arguments is on the stack: both refuse it.
			_, _, err = rel.Resolve(ctx, "amd64", std, []Request{{Func: spill, Captures: [][2]string{{"last", "last"}}}})
			if err == nil || !strings.Contains(err.Error(), "passed on the stack") {
				t.Errorf("a capture of an argument on the stack: %v", err)
			}
		})
	}
}

// Functions, fields and packages that do not exist are errors naming
// them; so is a capture through a second pointer.
func TestResolveErrors(t *testing.T) {
	ctx := context.Background()
	std, err := Std(ctx, localMinor(t))
	if err != nil {
		t.Fatal(err)
	}
	rel := &Release{Version: "v0.0.0", Module: Module{Path: ModulePath, Dir: filepath.Join("testdata", "layout")}}
	for _, tc := range []struct {
		req  Request
		want string
	}{
		{Request{Func: "github.com/cilium/cilium/pkg/a.(*T).Nope"}, "pkg/a.(*T).Nope: not declared"},
		{Request{Func: "github.com/cilium/cilium/pkg/a.T.Method"}, "not declared"}, // pointer receiver
		{Request{Func: "github.com/cilium/cilium/pkg/nope.F"}, "pkg/nope"},
		{Request{Func: method, Captures: [][2]string{{"x", "t.Nope"}}}, "no field Nope"},
		{Request{Func: method, Captures: [][2]string{{"x", "t.Inner.Rev.X"}}}, "not a struct"},
		{Request{Func: method, Captures: [][2]string{{"x", "ctx"}}}, "cannot be captured"},
		{Request{Func: "github.com/cilium/cilium/pkg/a.F[int]"}, "generic"},
	} {
		_, _, err := rel.Resolve(ctx, "amd64", std, []Request{tc.req})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error saying %q", tc.req, err, tc.want)
		}
	}
	if _, _, err := rel.Resolve(ctx, "riscv64", std, nil); err == nil {
		t.Error("riscv64 accepted")
	}
}

func TestParseFuncName(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want FuncName
		err  bool
	}{
		{in: "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate", want: FuncName{Pkg: "github.com/cilium/cilium/pkg/endpoint", Recv: "Endpoint", Ptr: true, Name: "regenerate"}},
		{in: "github.com/cilium/cilium/pkg/endpoint.State.String", want: FuncName{Pkg: "github.com/cilium/cilium/pkg/endpoint", Recv: "State", Name: "String"}},
		{in: "github.com/cilium/cilium/pkg/datapath/loader.compile", want: FuncName{Pkg: "github.com/cilium/cilium/pkg/datapath/loader", Name: "compile"}},
		{in: "github.com/cilium/cilium/pkg/lock.(*Map[...]).Load", err: true},
		{in: "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate.func1", err: true},
		{in: "nodot", err: true},
	} {
		got, err := ParseFuncName(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("%s: parsed as %+v", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want || got.String() != tc.in {
			t.Errorf("%s: %+v (%s), %v; want %+v", tc.in, got, got.String(), err, tc.want)
		}
	}
}

// localMinor is the minor release of the go command the tests build with:
// the DWARF they compare with describes its standard library.
func localMinor(t *testing.T) int {
	t.Helper()
	v, err := goEnv(context.Background(), "", "GOVERSION")
	if err != nil {
		t.Fatal(err)
	}
	minor, ok := symbols.GoMinor(v[0])
	if !ok {
		t.Fatalf("go %s: unknown release", v[0])
	}
	if _, ok := stdReleases[minor]; !ok {
		t.Fatalf("no standard library pinned for %s", v[0])
	}
	return minor
}

// buildFake builds testdata/layout's command for linux/arch, with DWARF.
func buildFake(t *testing.T, src, arch string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "fake")
	cmd := exec.Command("go", "build", "-buildvcs=false", "-o", out, "./cmd/fake")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=0", "GOFLAGS=", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", arch, err, b)
	}
	return out
}

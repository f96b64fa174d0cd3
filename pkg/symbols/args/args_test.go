package args

import (
	"debug/dwarf"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
)

func openAgent(t *testing.T, stripped bool) (*symbols.File, symbols.Func) {
	t.Helper()
	name := "agent"
	if stripped {
		name = "agent-stripped"
	}
	return openAgentBuild(t, name)
}

func openAgentBuild(t *testing.T, name string) (*symbols.File, symbols.Func) {
	t.Helper()
	f := symtest.Open(t, symtest.Agent(t, name), symbols.Open)
	fns, err := f.Funcs(symtest.RegenerateBPF)
	if err != nil {
		t.Fatal(err)
	}
	return f, fns[0]
}

// Offsets checked independently of DWARF where the agent's layout is plain:
// Endpoint is mutex sync.Mutex (8 bytes), owner *Owner, ID uint16 at 16,
// K8sPodName string at 24, ...
func TestResolveCapture(t *testing.T) {
	f, fn := openAgent(t, false)
	params, err := NewCaptureResolver(f, []symbols.Func{fn}).Params(fn)
	if err != nil {
		t.Fatal(err)
	}
	if len(params) != 2 || params[0].Name != "e" || params[1].Name != "ctx" ||
		!reflect.DeepEqual(params[0].Regs, []int{0}) || !reflect.DeepEqual(params[1].Regs, []int{1}) {
		t.Fatalf("params %+v, want e in register 0, ctx in register 1", params)
	}
	for _, tc := range []struct {
		expr string
		want Capture
	}{
		{"e.ID", Capture{Reg: 0, Offset: 16, Kind: KindUint, Size: 2}},
		{"e.K8sPodName", Capture{Reg: 0, Offset: 24, Kind: KindString, Size: 16}},
		{"e.SecurityIdentity", Capture{Reg: 0, Offset: 56, Kind: KindUint, Size: 4}},
		{"e.desiredPolicy.Revision", Capture{Reg: 0, Offset: int64(symtest.DWARFFieldOffset(t, symtest.Agent(t, "agent"), "github.com/cilium/cilium/pkg/endpoint.Endpoint", "desiredPolicy")), Deref: true, DerefOffset: 32, Kind: KindUint, Size: 8}},
		{"e", Capture{Reg: 0, InReg: true, Kind: KindPtr, Size: 8}},
		{"ctx", Capture{Reg: 1, InReg: true, Kind: KindPtr, Size: 8}},
		{"ctx.bpfSleep", Capture{Reg: 1, Offset: 0, Kind: KindInt, Size: 8}},
	} {
		got, err := NewCaptureResolver(f, []symbols.Func{fn}).Resolve(fn, "x", tc.expr)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		tc.want.Name, tc.want.Expr = "x", tc.expr
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.expr, got, tc.want)
		}
	}
}

// arm64 passes the same arguments in X0 and X1; field offsets are the same.
func TestResolveCaptureArm64(t *testing.T) {
	f, fn := openAgentBuild(t, "agent-arm64")
	if f.Arch != "arm64" {
		t.Fatalf("arch %s", f.Arch)
	}
	for expr, want := range map[string]Capture{
		"e.ID":         {Reg: 0, Offset: 16, Kind: KindUint, Size: 2},
		"e.K8sPodName": {Reg: 0, Offset: 24, Kind: KindString, Size: 16},
		"ctx":          {Reg: 1, InReg: true, Kind: KindPtr, Size: 8},
	} {
		got, err := NewCaptureResolver(f, []symbols.Func{fn}).Resolve(fn, "x", expr)
		want.Name, want.Expr = "x", expr
		if err != nil || got != want {
			t.Errorf("%s: got %+v, %v, want %+v", expr, got, err, want)
		}
	}
}

func TestResolveCaptureErrors(t *testing.T) {
	f, fn := openAgent(t, false)
	for _, tc := range []struct {
		expr      string
		available []string // for a *CaptureError
		msg       string
	}{
		{"ep.ID", []string{"e", "ctx"}, `no argument "ep" in ` + symtest.RegenerateBPF},
		{"e.Id", []string{"mutex", "owner", "ID", "K8sPodName"}, `no field "Id" in github.com/cilium/cilium/pkg/endpoint.Endpoint`},
		{"e.desiredPolicy.Rev", []string{"Identity", "Rules", "Revision"}, `no field "Rev" in github.com/cilium/cilium/pkg/policy.EndpointPolicy`},
		{"e.owner.Repository.Depth", nil, "at most one"},
		{"e.labels", nil, "supported: integers"},
		{"e.ID.x", nil, "e.ID is not a struct"},
	} {
		_, err := NewCaptureResolver(f, []symbols.Func{fn}).Resolve(fn, "x", tc.expr)
		if err == nil {
			t.Errorf("%s: no error", tc.expr)
			continue
		}
		if !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %q, want it to contain %q", tc.expr, err, tc.msg)
		}
		var ce *CaptureError
		if tc.available == nil {
			continue
		}
		if !errors.As(err, &ce) {
			t.Errorf("%s: %v is not a *CaptureError", tc.expr, err)
			continue
		}
		for _, name := range tc.available {
			if !strings.Contains(strings.Join(ce.Available, ","), name) {
				t.Errorf("%s: available %v lacks %s", tc.expr, ce.Available, name)
			}
		}
	}

	sf, sfn := openAgent(t, true)
	if _, err := NewCaptureResolver(sf, []symbols.Func{fn}).Resolve(sfn, "x", "e.ID"); !errors.Is(err, ErrNoDWARF) {
		t.Errorf("stripped: %v, want ErrNoDWARF", err)
	}
}

func TestParseRawCapture(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want Capture
		err  bool
	}{
		{expr: "arg0+16:u16", want: Capture{Reg: 0, Offset: 16, Kind: KindUint, Size: 2}},
		{expr: "arg1:s64", want: Capture{Reg: 1, InReg: true, Kind: KindInt, Size: 8}},
		{expr: "arg2:string", want: Capture{Reg: 2, InReg: true, Kind: KindString, Size: 16}},
		{expr: "arg0+0x48->32:u64", want: Capture{Offset: 0x48, Deref: true, DerefOffset: 32, Kind: KindUint, Size: 8}},
		{expr: "arg0->8:ptr", want: Capture{Deref: true, DerefOffset: 8, Kind: KindPtr, Size: 8}},
		{expr: "arg0+24:bool", want: Capture{Offset: 24, Kind: KindBool, Size: 1}},
		{expr: "arg0+16:u128", err: true},
		{expr: "argx+16:u16", err: true},
		{expr: "arg0-16:u16", err: true},
		{expr: "arg0+1x:u16", err: true},
		{expr: "arg0+8->zz:u16", err: true},
		{expr: "arg0+8", err: true},
	} {
		got, err := ParseRawCapture("n", tc.expr)
		if tc.err {
			if err == nil {
				t.Errorf("%s: parsed as %+v, want an error", tc.expr, got)
			}
			continue
		}
		tc.want.Name, tc.want.Expr = "n", tc.expr
		if err != nil || got != tc.want {
			t.Errorf("%s: got %+v, %v, want %+v", tc.expr, got, err, tc.want)
		}
		// Raw writes back what ParseRawCapture reads, in one spelling.
		back, err := ParseRawCapture("n", got.Raw())
		back.Expr = tc.expr
		if err != nil || back != got {
			t.Errorf("%s: Raw() = %q, which reads back as %+v, %v", tc.expr, got.Raw(), back, err)
		}
	}
	for _, s := range []string{"x", "=e.ID", "x=", "x = e.ID"} {
		name, expr, err := ParseCaptureFlag(s)
		if ok := err == nil; ok != (s == "x = e.ID") {
			t.Errorf("ParseCaptureFlag(%q) = %q, %q, %v", s, name, expr, err)
		}
	}
}

func TestFuncPackage(t *testing.T) {
	for name, want := range map[string]string{
		"github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF": "github.com/cilium/cilium/pkg/endpoint",
		"main.main":                        "main",
		"a/b.F[go.shape.*a/c.T]":           "a/b",
		"a/b.(*List[go.shape.string]).Len": "a/b",
		"runtime.gopanic":                  "runtime",
	} {
		if got := funcPackage(name); got != want {
			t.Errorf("funcPackage(%q) = %q, want %q", name, got, want)
		}
	}
}

// The register ABI: each argument entirely in registers or entirely on the
// stack; later arguments may still use registers after one went to the
// stack.
func TestABIAssign(t *testing.T) {
	u64 := &dwarf.UintType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 8, Name: "uint64"}}}
	f64 := &dwarf.FloatType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 8, Name: "float64"}}}
	ptr := &dwarf.PtrType{CommonType: dwarf.CommonType{ByteSize: 8}, Type: u64}
	str := &dwarf.StructType{StructName: "string", Kind: "struct", CommonType: dwarf.CommonType{ByteSize: 16},
		Field: []*dwarf.StructField{{Name: "str", Type: ptr}, {Name: "len", Type: u64, ByteOffset: 8}}}
	slice := &dwarf.StructType{StructName: "[]uint64", Kind: "struct", CommonType: dwarf.CommonType{ByteSize: 24},
		Field: []*dwarf.StructField{{Name: "array", Type: ptr}, {Name: "len", Type: u64, ByteOffset: 8}, {Name: "cap", Type: u64, ByteOffset: 16}}}
	arr2 := &dwarf.ArrayType{CommonType: dwarf.CommonType{ByteSize: 16}, Type: u64, Count: 2}
	arr1 := &dwarf.ArrayType{CommonType: dwarf.CommonType{ByteSize: 8}, Type: u64, Count: 1}

	a, err := NewRegAssigner("amd64")
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		t       dwarf.Type
		regs    []int
		onStack bool
	}{
		{ptr, []int{0}, false},
		{f64, nil, false},
		{str, []int{1, 2}, false},
		{arr2, nil, true}, // arrays longer than 1 are always on the stack
		{arr1, []int{3}, false},
		{slice, []int{4, 5, 6}, false},
		{slice, nil, true}, // 2 registers left: all of it on the stack
		{str, []int{7, 8}, false},
		{u64, nil, true},
	}
	for i, w := range want {
		regs, onStack := a.Assign(words(w.t))
		if !reflect.DeepEqual(regs, w.regs) || onStack != w.onStack {
			t.Errorf("arg %d (%s): registers %v on stack %v, want %v %v", i, w.t, regs, onStack, w.regs, w.onStack)
		}
	}
}

// A named string type (type ResourceID string) is written as a struct of
// the type's name with the fields of a string: it is captured as one.
func TestNamedStringType(t *testing.T) {
	u8 := &dwarf.UintType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 1, Name: "uint8"}}}
	i64 := &dwarf.IntType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 8, Name: "int"}}}
	u64 := &dwarf.UintType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 8, Name: "uint64"}}}
	ptr := func(t dwarf.Type) dwarf.Type {
		return &dwarf.PtrType{CommonType: dwarf.CommonType{ByteSize: 8}, Type: t}
	}
	str := func(name string, data, n dwarf.Type) dwarf.Type {
		return &dwarf.StructType{StructName: name, Kind: "struct", CommonType: dwarf.CommonType{ByteSize: 16},
			Field: []*dwarf.StructField{{Name: "str", Type: data}, {Name: "len", Type: n, ByteOffset: 8}}}
	}
	for _, tc := range []struct {
		t    dwarf.Type
		want bool
	}{
		{str("string", ptr(u8), i64), true},
		{str("github.com/cilium/cilium/pkg/ipcache/types.ResourceID", ptr(u8), i64), true},
		{str("pkg.notString", ptr(u64), i64), false},
		{str("pkg.notString", ptr(u8), u64), false},
	} {
		kind, size, ok := valueKind(tc.t)
		if got := ok && kind == KindString && size == 16; got != tc.want {
			t.Errorf("%s: valueKind = %s %d %v, want a string: %v", tc.t, kind, size, ok, tc.want)
		}
	}
}

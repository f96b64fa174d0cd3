package args

import (
	"reflect"
	"slices"
	"testing"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
)

// The layouts errorLayouts assumes are those DWARF gives, on every Go
// release the tests build the stand-in agent with (which links every one of
// the types); and the types are found through the itabs in each build,
// stripped and PIE too.
func TestErrorLayouts(t *testing.T) {
	// Per type: its DWARF name, and the fields its layout reads, in the
	// order of Str[0], Str[1], Inner, Word.
	fields := map[string]struct {
		dwarf  string
		fields [4]string
	}{
		"*errors.errorString": {"errors.errorString", [4]string{"s"}},
		"*fmt.wrapError":      {"fmt.wrapError", [4]string{"msg"}},
		"*fmt.wrapErrors":     {"fmt.wrapErrors", [4]string{"msg"}},
		"*fs.PathError":       {"io/fs.PathError", [4]string{"Op", "Path", "Err"}},
		"*os.SyscallError":    {"os.SyscallError", [4]string{"Syscall", "", "Err"}},
		"*exec.ExitError":     {"os/exec.ExitError", [4]string{3: "ProcessState"}},
	}
	for _, v := range testagent.Matrix {
		t.Run(v.String(), func(t *testing.T) {
			path := testagent.Build(t, v)
			f := symtest.Open(t, path, symbols.Open)
			ts, err := ErrorTypes(f)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, et := range ts {
				names = append(names, et.Name)
				if et.ErrorLayout != errorLayouts[et.Name] {
					t.Errorf("%s: layout %+v, want %+v", et.Name, et.ErrorLayout, errorLayouts[et.Name])
				}
			}
			slices.Sort(names)
			want := []string{"*errors.errorString", "*exec.ExitError", "*fmt.wrapError", "*fmt.wrapErrors", "*fs.PathError", "*os.SyscallError", "syscall.Errno"}
			if !reflect.DeepEqual(names, want) {
				t.Errorf("error types %v, want %v", names, want)
			}
			if v.Stripped {
				return
			}
			for name, fs := range fields {
				l := errorLayouts[name]
				offs := [4]int32{l.Str[0], l.Str[1], l.Inner, l.Word}
				for i, field := range fs.fields {
					if field == "" {
						if offs[i] != -1 {
							t.Errorf("%s: offset %d of part %d, which it does not have", name, offs[i], i)
						}
						continue
					}
					if got := symtest.DWARFFieldOffset(t, path, fs.dwarf, field); int32(got) != offs[i] {
						t.Errorf("%s.%s at %d in DWARF, the layout says %d", fs.dwarf, field, got, offs[i])
					}
				}
			}
			if got := symtest.DWARFFieldOffset(t, path, "os.ProcessState", "status"); int32(got) != errorLayouts["*exec.ExitError"].WordDeref {
				t.Errorf("os.ProcessState.status at %d in DWARF, the layout says %d", got, errorLayouts["*exec.ExitError"].WordDeref)
			}
		})
	}
}

// regenerateBPF returns (revnum uint64, reterr error): the register ABI
// puts results in the argument registers from the first; a result DWARF
// lists twice is one result.
func TestResolveReturn(t *testing.T) {
	path := testagent.Build(t, testagent.Variant{})
	f := symtest.Open(t, path, symbols.Open)
	fns, err := f.Funcs(testagent.RegenerateBPF)
	if err != nil {
		t.Fatal(err)
	}
	r := NewCaptureResolver(f, fns)
	got, err := r.Resolve(fns[0], "rev", "ret0")
	if want := (Capture{Name: "rev", Expr: "ret0", Reg: 0, InReg: true, AtReturn: true, Kind: KindUint, Size: 8}); err != nil || got != want {
		t.Errorf("ret0: %+v, %v; want %+v", got, err, want)
	}
	c, ok, err := r.ErrorResult(fns[0])
	if want := (Capture{Name: "error", Expr: "ret1:error", Reg: 1, InReg: true, AtReturn: true, Kind: KindError, Size: 16}); err != nil || !ok || c != want {
		t.Errorf("error result: %+v, %v, %v; want %+v", c, ok, err, want)
	}
	for _, tc := range []struct{ expr, want string }{
		{"ret2", `capture-return "ret2": github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF has no such result (results: ret0 uint64, ret1 error)`},
		{"ret1", `capture-return "ret1": result 1 of github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF has type error; supported: integers, bool, pointers`},
	} {
		if _, err := r.Resolve(fns[0], "x", tc.expr); err == nil || err.Error() != tc.want {
			t.Errorf("%s: %v, want %s", tc.expr, err, tc.want)
		}
	}
	raw, err := ParseRawCapture("rev", "ret0:u64")
	if err != nil || raw != (Capture{Name: "rev", Expr: "ret0:u64", InReg: true, AtReturn: true, Kind: KindUint, Size: 8}) || raw.Raw() != "ret0:u64" || raw.Validate() != nil {
		t.Errorf("ret0:u64: %+v, %v", raw, err)
	}
	// GetSelectorPolicy has a defer: Go 1.26 writes its one result
	// twice in DWARF. It is one result, in the first register.
	const getPolicy = "github.com/cilium/cilium/pkg/policy.(*Repository).GetSelectorPolicy"
	fns, err = f.Funcs(getPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if rs, err := NewCaptureResolver(f, fns).Results(fns[0]); err != nil || len(rs) != 1 || !slices.Equal(rs[0].Regs, []int{0}) {
		t.Errorf("results of %s: %+v, %v; want one, in register 0", getPolicy, rs, err)
	}
	// The error result's raw form, as the presets' catalogue holds it,
	// reads back as DWARF resolves it.
	if raw, err := ParseRawCapture("error", c.Raw()); err != nil || raw != c || raw.Validate() != nil {
		t.Errorf("%s: %+v, %v; want %+v", c.Raw(), raw, err, c)
	}
	if _, err := ParseRawCapture("s", "ret0:string"); err == nil {
		t.Error("ret0:string: no error")
	}
}

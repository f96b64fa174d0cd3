package offsets

import (
	"bytes"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
)

// openSelf opens the test binary: a Go executable of another build than
// any the tests make offsets files from.
func openSelf(t *testing.T) *symbols.File {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return symtest.Open(t, self, symbols.Open)
}

// openAgent opens the build of the example agent named name (see
// symtest.Agent).
func openAgent(t *testing.T, name string) *symbols.File {
	t.Helper()
	return symtest.Open(t, symtest.Agent(t, name), symbols.Open)
}

// Stripping changes the Go build ID but not the fingerprint; an offsets
// file made on the unstripped build works on the stripped one and is
// refused by another build.
func TestOffsetsFile(t *testing.T) {
	f, sf := openAgent(t, "agent"), openAgent(t, "agent-stripped")
	fns, err := f.Funcs(symtest.RegenerateBPF)
	if err != nil {
		t.Fatal(err)
	}
	fn := fns[0]
	if f.BuildID == sf.BuildID {
		t.Errorf("build IDs of stripped and unstripped builds are equal (%s): the fingerprint would not be needed", f.BuildID)
	}
	o, err := New(f, []symbols.Func{fn}, [][2]string{{"endpoint_id", "e.ID"}, {"pod", "e.K8sPodName"}})
	if err != nil {
		t.Fatal(err)
	}
	back := roundTrip(t, o)
	if err := back.Check(sf); err != nil {
		t.Errorf("stripped build refused: %v", err)
	}
	c, err := back.Lookup(symtest.RegenerateBPF, "endpoint_id")
	if err != nil || c.Offset != 16 || c.Kind != args.KindUint || c.Size != 2 {
		t.Errorf("Lookup = %+v, %v", c, err)
	}
	if _, err := back.Lookup(symtest.RegenerateBPF, "nope"); err == nil || !strings.Contains(err.Error(), "endpoint_id, pod") {
		t.Errorf("Lookup of a missing capture: %v", err)
	}

	// Any other Go executable: the test binary itself.
	other := openSelf(t)
	if err := back.Check(other); !errors.Is(err, ErrMismatch) {
		t.Errorf("Check against another build: %v, want ErrMismatch", err)
	}

	for _, bad := range []string{
		`{}`,
		`{"fingerprint":"x","funcs":{"f":[{"name":"a","kind":"float","size":8}]}}`,
		`{"fingerprint":"x","funcs":{"f":[{"name":"a","kind":"uint","size":16}]}}`,
		`{"fingerprint":"x","funcs":{"f":[{"name":"a","kind":"uint","size":8,"reg":99}]}}`,
		`{"fingerprint":"x","bogus":1}`,
		`not json`,
	} {
		if _, err := Read(strings.NewReader(bad)); err == nil {
			t.Errorf("Read(%s): no error", bad)
		}
	}
}

// roundTrip writes o as an offsets file and reads it back.
func roundTrip(t *testing.T, o *File) *File {
	t.Helper()
	var buf bytes.Buffer
	if err := o.Write(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return back
}

// FuzzReadOffsets reads an offsets file: a file it accepts must write back
// to a file that reads the same, and every capture in it must be found.
//
//	go test -run '^$' -fuzz '^FuzzReadOffsets$' -fuzztime 10m -fuzzminimizetime 1000x ./pkg/symbols/offsets
func FuzzReadOffsets(f *testing.F) {
	g := gOffsets[26]
	o := &File{GoVersion: "go1.26.8", Arch: "amd64", Fingerprint: strings.Repeat("ab", 32), G: &g, WaitReasons: waitReasons[26], Funcs: map[string][]args.Capture{
		"github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF": {
			{Name: "endpoint", Expr: "e.ID", Reg: 0, Offset: 1280, Kind: args.KindUint, Size: 2},
			{Name: "ifname", Expr: "e.ifName", Reg: 0, Offset: 96, Kind: args.KindString, Size: 16},
		},
		"main.f": {{Name: "p", Expr: "arg1.next.v", Reg: 1, Offset: 8, Deref: true, DerefOffset: -4, Kind: args.KindInt, Size: 4}},
	}}
	var b bytes.Buffer
	if err := o.Write(&b); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	f.Add([]byte(`{"fingerprint":"x","funcs":{"f":[{"name":"s","reg":3,"in_reg":true,"kind":"string","size":16}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := Read(bytes.NewReader(data))
		if err != nil {
			symtest.OneLine(t, err)
			return
		}
		var b bytes.Buffer
		if err := o.Write(&b); err != nil {
			t.Fatal(err)
		}
		again, err := Read(&b)
		if err != nil {
			t.Fatalf("written back, it fails to read: %v\n%s", err, b.Bytes())
		}
		if !reflect.DeepEqual(o, again) {
			t.Fatalf("read %+v, written and read back %+v", o, again)
		}
		for fn, cs := range o.Funcs {
			for _, c := range cs {
				if _, err := o.Lookup(fn, c.Name); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

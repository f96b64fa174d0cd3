package offsets

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
)

// dwarfG reads runtime.g's layout from the executable at path through
// debug/dwarf, the reference.
func dwarfG(t *testing.T, path string) G {
	t.Helper()
	field := func(typ, name string) uint64 { return symtest.DWARFFieldOffset(t, path, typ, name) }
	stack, sched := field("runtime.g", "stack"), field("runtime.g", "sched")
	return G{
		StackLo: stack + field("runtime.stack", "lo"), StackHi: stack + field("runtime.stack", "hi"),
		M:       field("runtime.g", "m"),
		SchedSP: sched + field("runtime.gobuf", "sp"), SchedPC: sched + field("runtime.gobuf", "pc"), SchedBP: sched + field("runtime.gobuf", "bp"),
		Status: field("runtime.g", "atomicstatus"), Goid: field("runtime.g", "goid"), WaitReason: field("runtime.g", "waitreason"),
	}
}

// Every entry of the table is what DWARF says for every Go release the
// tests build, amd64 and arm64, and so is the DWARF route the tracer takes
// for a release the table does not know; a stripped build gets the table's.
func TestGOffsets(t *testing.T) {
	fromDWARF := map[string]G{} // by toolchain and architecture
	minors := map[int]bool{}
	for _, tg := range symtest.Targets(t) {
		if tg.Stripped {
			continue
		}
		f := symtest.Open(t, tg.Path, symbols.Open)
		want := dwarfG(t, tg.Path)
		if got, err := GOffsets(f); err != nil || got != want {
			t.Errorf("%s: GOffsets() = %+v, %v; DWARF says %+v", tg, got, err, want)
		}
		if minor, ok := symbols.GoMinor(f.GoVersion); ok {
			minors[minor] = true
		}
		fromDWARF[tg.Toolchain+"/"+tg.GOARCH] = want
		f.GoVersion = "go1.99.1"
		if got, err := GOffsets(f); err != nil || got != want {
			t.Errorf("%s as go1.99.1: GOffsets() from DWARF = %+v, %v; debug/dwarf says %+v", tg, got, err, want)
		}
		if want.Size() > 256 {
			t.Errorf("%s: the fields span %d bytes of runtime.g", tg, want.Size())
		}
	}
	for _, tg := range symtest.Targets(t) {
		if !tg.Stripped {
			continue
		}
		f := symtest.Open(t, tg.Path, symbols.Open)
		want := fromDWARF[tg.Toolchain+"/"+tg.GOARCH]
		if got, err := GOffsets(f); err != nil || got != want {
			t.Errorf("%s: GOffsets() = %+v, %v; want %+v", tg, got, err, want)
		}
		f.GoVersion = "go1.99.1"
		if _, err := GOffsets(f); !errors.Is(err, ErrUnknownGoVersion) {
			t.Errorf("%s as go1.99.1: GOffsets(): %v, want ErrUnknownGoVersion", tg, err)
		}
	}
	for minor := range gOffsets {
		if !minors[minor] && minor != 19 {
			t.Errorf("the table has Go 1.%d, which no test target is built with", minor)
		}
	}
}

// A stripped build of a release the tables do not know gets runtime.g's
// layout and the wait reasons from the offsets file made on the unstripped
// build; an offsets file of another build cannot supply them.
func TestGOffsetsFromOffsetsFile(t *testing.T) {
	f, sf := openAgent(t, "agent"), openAgent(t, "agent-stripped")
	wantG := dwarfG(t, symtest.Agent(t, "agent"))
	wantReasons := symtest.Strings(t, symtest.Agent(t, "agent"), waitReasonStrings)
	v := "go1.99.1"
	f.GoVersion, sf.GoVersion = v, v
	if _, err := GOffsetsFrom(sf, nil); !errors.Is(err, ErrUnknownGoVersion) {
		t.Errorf("GOffsetsFrom(nil): %v, want ErrUnknownGoVersion", err)
	}
	if _, err := WaitReasonsFrom(sf, nil); !errors.Is(err, ErrUnknownGoVersion) {
		t.Errorf("WaitReasonsFrom(nil): %v, want ErrUnknownGoVersion", err)
	}
	// On the unstripped build, New finds them in DWARF and .symtab.
	o, err := New(f, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	back := roundTrip(t, o)
	if got, err := GOffsetsFrom(sf, back); err != nil || got != wantG {
		t.Errorf("GOffsetsFrom(offsets file) = %+v, %v; DWARF says %+v", got, err, wantG)
	}
	if got, err := WaitReasonsFrom(sf, back); err != nil || !slices.Equal(got, wantReasons) {
		t.Errorf("WaitReasonsFrom(offsets file) = %q, %v; the binary has %q", got, err, wantReasons)
	}
	back.G, back.WaitReasons = nil, nil
	if _, err := GOffsetsFrom(sf, back); !errors.Is(err, ErrUnknownGoVersion) || !strings.Contains(err.Error(), "nor does the offsets file") {
		t.Errorf("offsets file without g: %v", err)
	}
	if _, err := WaitReasonsFrom(sf, back); !errors.Is(err, ErrUnknownGoVersion) || !strings.Contains(err.Error(), "nor does the offsets file") {
		t.Errorf("offsets file without wait_reasons: %v", err)
	}

	other, err := New(openSelf(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := GOffsetsFrom(sf, other); !errors.Is(err, ErrUnknownGoVersion) || !strings.Contains(err.Error(), ErrMismatch.Error()) {
		t.Errorf("GOffsetsFrom(offsets file of another build): %v", err)
	}
	if _, err := WaitReasonsFrom(sf, other); !errors.Is(err, ErrUnknownGoVersion) || !strings.Contains(err.Error(), ErrMismatch.Error()) {
		t.Errorf("WaitReasonsFrom(offsets file of another build): %v", err)
	}

	for _, bad := range []string{
		`{"fingerprint":"x","g":{"atomicstatus":2}}`,
		`{"fingerprint":"x","g":{"goid":4}}`,
		`{"fingerprint":"x","g":{"sched_bp":8192}}`,
		`{"fingerprint":"x","g":{"waitreason":4096}}`,
		`{"fingerprint":"x","g":{}}`,
		`{"fingerprint":"x","g":{"stack_lo":0,"stack_hi":8,"m":48,"sched_sp":56,"sched_pc":64,"sched_bp":104,"atomicstatus":152,"goid":152,"waitreason":176}}`,
		`{"fingerprint":"x","wait_reasons":[` + strings.Repeat(`"x",`, 256) + `"x"]}`,
	} {
		if _, err := Read(strings.NewReader(bad)); err == nil {
			t.Errorf("Read(%s): no error", bad)
		}
	}
}

package offsets

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
)

// G holds the offsets in runtime.g of the fields a goroutine's state is read
// from, sched's and stack's members included. Status (atomicstatus) is 4
// bytes wide, WaitReason 1, the others 8.
type G struct {
	StackLo    uint64 `json:"stack_lo"`
	StackHi    uint64 `json:"stack_hi"`
	M          uint64 `json:"m"`
	SchedSP    uint64 `json:"sched_sp"`
	SchedPC    uint64 `json:"sched_pc"`
	SchedBP    uint64 `json:"sched_bp"`
	Status     uint64 `json:"atomicstatus"`
	Goid       uint64 `json:"goid"`
	WaitReason uint64 `json:"waitreason"`
}

// Size is the length of the prefix of runtime.g that holds every field: a
// single read of it gets them all.
func (g G) Size() uint64 {
	var n uint64
	for _, f := range g.fields() {
		n = max(n, f.off+f.size)
	}
	return n
}

type gField struct {
	name      string
	off, size uint64
}

func (g G) fields() []gField {
	return []gField{
		{"stack_lo", g.StackLo, 8}, {"stack_hi", g.StackHi, 8}, {"m", g.M, 8},
		{"sched_sp", g.SchedSP, 8}, {"sched_pc", g.SchedPC, 8}, {"sched_bp", g.SchedBP, 8},
		{"atomicstatus", g.Status, 4}, {"goid", g.Goid, 8}, {"waitreason", g.WaitReason, 1},
	}
}

// validate checks offsets read from a file: runtime.g is a few hundred
// bytes, and its fields are aligned to their sizes and do not overlap.
func (g G) validate() error {
	fs := g.fields()
	for _, f := range fs {
		if f.off%f.size != 0 || f.off >= 4096 {
			return fmt.Errorf("bad %s offset %d", f.name, f.off)
		}
	}
	slices.SortFunc(fs, func(a, b gField) int { return cmp.Compare(a.off, b.off) })
	for i := 1; i < len(fs); i++ {
		if fs[i-1].off+fs[i-1].size > fs[i].off {
			return fmt.Errorf("%s at %d overlaps %s at %d", fs[i-1].name, fs[i-1].off, fs[i].name, fs[i].off)
		}
	}
	return nil
}

// gOffsets is runtime.g's layout per Go minor release, the same for amd64
// and arm64: the struct has no per-architecture fields, and gobuf keeps lr
// and bp on both. Go 1.23 added g.syscallbp before atomicstatus; Go 1.25
// dropped gobuf.ret. Each release's src/runtime/runtime2.go; tests check
// every entry against the DWARF of real builds, but Go 1.19's, which this
// machine's toolchain cannot build, comes from its source alone.
var gOffsets = func() map[int]G {
	g118 := G{StackLo: 0, StackHi: 8, M: 48, SchedSP: 56, SchedPC: 64, SchedBP: 104, Status: 144, Goid: 152, WaitReason: 176}
	g123 := g118
	g123.Status, g123.Goid, g123.WaitReason = 152, 160, 184
	g125 := g118
	g125.SchedBP = 96
	return map[int]G{
		18: g118, 19: g118, 20: g118, 21: g118, 22: g118,
		23: g123, 24: g123,
		25: g125, 26: g125,
	}
}()

// gTable returns the table's layout for f's Go release and architecture.
func gTable(f *symbols.File) (G, bool) {
	if f.Arch != "amd64" && f.Arch != "arm64" {
		return G{}, false
	}
	minor, ok := symbols.GoMinor(f.GoVersion)
	if !ok {
		return G{}, false
	}
	g, ok := gOffsets[minor]
	return g, ok
}

// GOffsets returns the offsets of runtime.g's fields: from the table of
// known Go releases, else from DWARF when the executable has it (one pass
// over runtime's compile units, hundreds of milliseconds on a large binary).
func GOffsets(f *symbols.File) (G, error) {
	if _, err := f.ELF(); err != nil {
		return G{}, err
	}
	if g, ok := gTable(f); ok {
		return g, nil
	}
	if f.Arch != "amd64" && f.Arch != "arm64" {
		return G{}, fmt.Errorf("runtime.g offsets: unsupported architecture %s", f.Arch)
	}
	if !f.HasDWARF {
		return G{}, fmt.Errorf("runtime.g offsets for %q without DWARF: %w", f.GoVersion, ErrUnknownGoVersion)
	}
	o, err := args.RuntimeFieldOffsets(f,
		args.Field{Type: "runtime.g", Name: "stack"},
		args.Field{Type: "runtime.stack", Name: "lo"},
		args.Field{Type: "runtime.stack", Name: "hi"},
		args.Field{Type: "runtime.g", Name: "m"},
		args.Field{Type: "runtime.g", Name: "sched"},
		args.Field{Type: "runtime.gobuf", Name: "sp"},
		args.Field{Type: "runtime.gobuf", Name: "pc"},
		args.Field{Type: "runtime.gobuf", Name: "bp"},
		args.Field{Type: "runtime.g", Name: "atomicstatus"},
		args.Field{Type: "runtime.g", Name: "goid"},
		args.Field{Type: "runtime.g", Name: "waitreason"},
	)
	if err != nil {
		return G{}, fmt.Errorf("runtime.g offsets for %q: %w", f.GoVersion, err)
	}
	stack, sched := o[0], o[4]
	return G{
		StackLo: stack + o[1], StackHi: stack + o[2],
		M:       o[3],
		SchedSP: sched + o[5], SchedPC: sched + o[6], SchedBP: sched + o[7],
		Status: o[8], Goid: o[9], WaitReason: o[10],
	}, nil
}

// GOffsetsFrom is GOffsets, falling back to the offsets that `tracer
// offsets` recorded from an unstripped build of the same code in o (nil: no
// offsets file).
func GOffsetsFrom(f *symbols.File, o *File) (G, error) {
	g, err := GOffsets(f)
	if err == nil || o == nil {
		return g, err
	}
	if o.G == nil {
		return G{}, fmt.Errorf("%w, nor does the offsets file have them", err)
	}
	if cerr := o.Check(f); cerr != nil {
		return G{}, fmt.Errorf("%w, and the offsets file cannot supply them: %v", err, cerr)
	}
	return *o.G, nil
}

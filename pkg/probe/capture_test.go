package probe

import (
	"encoding/binary"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium-tracer/tracer/bpf/uprobes"
	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
)

func TestCheckCaptures(t *testing.T) {
	id := args.Capture{Name: "id", Reg: 0, Offset: 16, Kind: args.KindUint, Size: 2}
	str := func(reg int) args.Capture {
		return args.Capture{Name: "s", Reg: reg, InReg: true, Kind: args.KindString, Size: 16}
	}
	probe := func(cs ...args.Capture) Probe {
		return Probe{Func: symbols.Func{Name: "f"}, Captures: cs}
	}
	for _, tc := range []struct {
		p    Probe
		arch string
		want string // "" for no error
	}{
		{probe(id), "amd64", ""},
		{probe(id, id, id, id), "amd64", ""},
		{probe(id, id, id, id, id), "amd64", "at most 4"},
		{probe(id, id, id, id, args.ErrorResultIn(1)), "amd64", ""}, // the error result takes no slot
		{probe(id, args.ErrorResultIn(1), id), "amd64", "not the last"},
		{probe(args.ErrorResultIn(1), args.ErrorResultIn(1)), "amd64", "not the last"},
		{probe(args.ErrorResultIn(8)), "amd64", "register 9"},
		{Probe{Func: symbols.Func{Name: "f"}, Captures: []args.Capture{id}, Config: Config{EntryOnly: true}}, "amd64", "entry-only"},
		{probe(str(7)), "amd64", ""},
		{probe(str(8)), "amd64", "register 9"}, // the length would be in a tenth register
		{probe(str(14)), "arm64", ""},
		{probe(str(15)), "arm64", "register 16"},
		{probe(id), "riscv64", "not supported"},
		{probe(), "riscv64", ""},
		{probe(args.Capture{Name: "x", Kind: args.KindUint, Size: 3 << 4}), "amd64", "bad size"},
	} {
		err := checkCaptures(tc.p, tc.arch)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v on %s: %v, want %q", tc.p.Captures, tc.arch, err, tc.want)
		}
	}
}

// The bytes after an event are struct capture_vals as the BPF programs
// write it.
func TestDecodeValues(t *testing.T) {
	b := make([]byte, unsafe.Sizeof(uprobes.UprobesCaptureVals{}))
	if len(b) != 4+4*MaxCaptures+MaxCaptures*CaptureBytes {
		t.Fatalf("capture_vals is %d bytes: MaxCaptures or CaptureBytes differ from the C", len(b))
	}
	le := binary.LittleEndian
	le.PutUint32(b[0:], 0b101) // values 0 and 2 read, 1 faulted
	le.PutUint32(b[4:], 2)
	le.PutUint32(b[8:], 8)
	le.PutUint32(b[12:], 100)
	data := b[4+4*MaxCaptures:]
	le.PutUint16(data[0:], 1000)
	le.PutUint64(data[CaptureBytes:], 0xdead) // not OK: ignored
	copy(data[2*CaptureBytes:], strings.Repeat("x", CaptureBytes))

	vs := decodeValuesBytes(b, 3)
	if len(vs) != 3 {
		t.Fatalf("%d values, want 3", len(vs))
	}
	if !vs[0].OK || le.Uint16(vs[0].Data) != 1000 || len(vs[0].Data) != 2 {
		t.Errorf("value 0: %+v", vs[0])
	}
	if vs[1].OK || vs[1].Data != nil {
		t.Errorf("value 1: %+v, want not OK", vs[1])
	}
	if !vs[2].OK || vs[2].Len != 100 || string(vs[2].Data) != strings.Repeat("x", CaptureBytes) {
		t.Errorf("value 2: %+v", vs[2])
	}
}

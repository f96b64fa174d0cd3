package calls

import (
	"testing"

	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
)

func TestFormatValue(t *testing.T) {
	for _, tc := range []struct {
		kind args.ValueKind
		v    probe.Value
		want string
	}{
		{args.KindUint, probe.Value{OK: true, Data: []byte{0xe8, 0x03}}, "1000"},
		{args.KindUint, probe.Value{OK: true, Data: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}, "18446744073709551615"},
		{args.KindInt, probe.Value{OK: true, Data: []byte{0xfe}}, "-2"},
		{args.KindInt, probe.Value{OK: true, Data: []byte{0x18, 0xfc, 0xff, 0xff}}, "-1000"},
		{args.KindInt, probe.Value{OK: true, Data: []byte{0x7f, 0, 0, 0, 0, 0, 0, 0}}, "127"},
		{args.KindBool, probe.Value{OK: true, Data: []byte{1}}, "true"},
		{args.KindBool, probe.Value{OK: true, Data: []byte{0}}, "false"},
		{args.KindPtr, probe.Value{OK: true, Data: []byte{0x40, 0xe1, 0x21, 0x33, 0x2e, 0x12, 0, 0}}, "0x122e3321e140"},
		{args.KindString, probe.Value{OK: true, Data: []byte("xwing-1000"), Len: 10}, "xwing-1000"},
		{args.KindString, probe.Value{OK: true, Data: []byte("abc"), Len: 100}, "abc..."},
		{args.KindString, probe.Value{OK: true, Data: []byte{'a', 0xff}, Len: 2}, "a\uFFFD"},
		{args.KindString, probe.Value{OK: true, Len: 0}, ""},
		{args.KindUint, probe.Value{}, ""}, // the read faulted
	} {
		if got := FormatValue(args.Capture{Kind: tc.kind}, tc.v); got != tc.want {
			t.Errorf("%s %v: %q, want %q", tc.kind, tc.v, got, tc.want)
		}
	}
}

func TestShortName(t *testing.T) {
	for in, want := range map[string]string{
		"github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF": "endpoint.(*Endpoint).regenerateBPF",
		"main.main.func1": "main.main.func1",
		"runtime.goexit":  "runtime.goexit",
		"github.com/x/y.Map[go.shape.struct { F *example.com/z.T }]": "y.Map[go.shape.struct { F *example.com/z.T }]",
		"": "",
	} {
		if got := ShortName(in); got != want {
			t.Errorf("ShortName(%q) = %q, want %q", in, got, want)
		}
	}
}

package calls

import (
	"testing"

	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// Probes attached without the goid offset report the g address: the call
// then has no goroutine ID rather than that address.
func TestBuildGoidUnknown(t *testing.T) {
	const gAddr = 0xc000102340
	for _, unknown := range []bool{false, true} {
		b := Builder{Probes: []probe.Probe{{Func: symbols.Func{Name: "f"}}}, GoidUnknown: unknown}
		c, err := b.Build(&probe.Record{Goroutine: gAddr, Kind: probe.Returned})
		if err != nil {
			t.Fatal(err)
		}
		want := uint64(gAddr)
		if unknown {
			want = 0
		}
		if c.Goroutine != want {
			t.Errorf("GoidUnknown %v: Goroutine %#x, want %#x", unknown, c.Goroutine, want)
		}
	}
}

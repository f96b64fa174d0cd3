package offsets

import (
	"errors"
	"slices"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
)

// Every table is the runtime.waitReasonStrings array of real builds of its
// release, amd64 and arm64, as debug/elf reads it; File.Strings, the route
// for a release the tables do not know, reads the same array, through the
// dynamic relocations in a PIE; a stripped build gets the table's.
func TestWaitReasons(t *testing.T) {
	fromBinary := map[string][]string{} // by toolchain and architecture
	minors := map[int]bool{}
	for _, tg := range symtest.Targets(t) {
		if tg.Stripped || tg.PIE || tg.External {
			continue
		}
		want := symtest.Strings(t, tg.Path, waitReasonStrings)
		f := symtest.Open(t, tg.Path, symbols.Open)
		if got, err := WaitReasons(f); err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: WaitReasons() = %q, %v; the binary has %q", tg, got, err, want)
		}
		if minor, ok := symbols.GoMinor(f.GoVersion); ok {
			minors[minor] = true
		}
		fromBinary[tg.Toolchain+"/"+tg.GOARCH] = want
	}
	for _, tg := range symtest.Targets(t) {
		want, ok := fromBinary[tg.Toolchain+"/"+tg.GOARCH]
		if !ok {
			t.Fatalf("%s: no build to compare with", tg)
		}
		f := symtest.Open(t, tg.Path, symbols.Open)
		if got, err := WaitReasons(f); err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: WaitReasons() = %q, %v; want %q", tg, got, err, want)
		}
		f.GoVersion = "go1.99.1"
		got, err := WaitReasons(f)
		if tg.Stripped {
			if !errors.Is(err, ErrUnknownGoVersion) {
				t.Errorf("%s as go1.99.1: WaitReasons(): %v, want ErrUnknownGoVersion", tg, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%s as go1.99.1: WaitReasons() from the binary = %q, %v; want %q", tg, got, err, want)
		}
	}
	for minor := range waitReasons {
		if !minors[minor] && minor != 19 {
			t.Errorf("the table has Go 1.%d, which no test target is built with", minor)
		}
	}
}

package disasm_test

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/arch/arm64/arm64asm"
	"golang.org/x/arch/x86/x86asm"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/disasm"
	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
)

// Builds whose code seeds the fuzz target: the local toolchain's amd64 and
// arm64 ones, and a Go 1.18 one.
var seedBuilds = []struct{ toolchain, goarch string }{
	{"local", "amd64"},
	{"local", "arm64"},
	{"go1.18.10", "amd64"},
}

// mainBodies returns the code of the run of main package functions around
// main.(*Endpoint).regenerateBPF in the stripped build at path, each up to
// the next function's entry, alignment padding included (the last function
// of the table up to its end).
func mainBodies(tb testing.TB, path string) [][]byte {
	tb.Helper()
	f := symtest.Open(tb, path, symbols.Open)
	all, err := f.Funcs("*")
	if err != nil {
		tb.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	first := slices.IndexFunc(all, func(fn symbols.Func) bool { return fn.Name == "main.(*Endpoint).regenerateBPF" })
	if first < 0 {
		tb.Fatalf("%s: no main.(*Endpoint).regenerateBPF", path)
	}
	for first > 0 && strings.HasPrefix(all[first-1].Name, "main.") {
		first--
	}
	var bodies [][]byte
	for i := first; i < len(all) && strings.HasPrefix(all[i].Name, "main."); i++ {
		fn, end := all[i], all[i].End
		if i+1 < len(all) {
			end = all[i+1].Entry
		}
		bodies = append(bodies, data[fn.Offset:fn.Offset+end-fn.Entry])
	}
	return bodies
}

// FuzzScanReturns scans a function body for RETs. Each offset must be in
// the body, decode as a RET, and be an instruction boundary: the body cut
// at one scans to the RETs before it, and the rest to the RETs after it.
//
//	go test -run '^$' -fuzz '^FuzzScanReturns$' -fuzztime 10m -fuzzminimizetime 1000x ./pkg/symbols/disasm
func FuzzScanReturns(f *testing.F) {
	// The bodies of the main package's functions.
	for _, b := range seedBuilds {
		tg := symtest.FindTarget(f, b.toolchain, b.goarch, false, true)
		for _, code := range mainBodies(f, tg.Path) {
			f.Add(code, b.goarch == "arm64")
		}
	}
	f.Add([]byte{0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0xc3}, false)            // ENDBR64; PUSH RBP; RET
	f.Add([]byte{0xc5, 0xf8, 0x77, 0xc3}, false)                        // VZEROUPPER; RET
	f.Add([]byte{0xc0, 0x03, 0x5f, 0xd6, 0, 0, 0, 0}, true)             // RET; padding
	f.Add([]byte{0x20, 0x7c, 0xa0, 0x88, 0xc0, 0x03, 0x5f, 0xd6}, true) // CAS; RET
	f.Fuzz(func(t *testing.T, code []byte, arm bool) {
		arch := "amd64"
		if arm {
			arch = "arm64"
		}
		rets, bad, err := scanReturns(arch, code)
		if err != nil {
			symtest.OneLine(t, err)
			if bad < 0 || bad >= len(code) {
				t.Fatalf("undecodable instruction at %d of %d bytes: %v", bad, len(code), err)
			}
			return
		}
		for k, r := range rets {
			if r < 0 || r >= len(code) || k > 0 && r <= rets[k-1] {
				t.Fatalf("RETs at %d in %d bytes", rets, len(code))
			}
			if !isRET(arch, code[r:]) {
				t.Fatalf("RET at %d does not decode as one: % x", r, code[r:min(r+16, len(code))])
			}
		}
		if len(rets) == 0 {
			return
		}
		// Cut before the last RET, the body scans to the others; from the
		// first, to all of them: both are instruction boundaries.
		last := rets[len(rets)-1]
		before, _, err := scanReturns(arch, code[:last])
		if err != nil || !slices.Equal(before, rets[:len(rets)-1]) {
			t.Fatalf("RETs %d; the body cut at %d scans to %d, %v", rets, last, before, err)
		}
		after, _, err := scanReturns(arch, code[rets[0]:])
		for j := range after {
			after[j] += rets[0]
		}
		if err != nil || !slices.Equal(after, rets) {
			t.Fatalf("RETs %d; the body from %d scans to %d, %v", rets, rets[0], after, err)
		}
	})
}

// scanReturns decodes code as the body of a function at file offset 0 and
// returns its RETs, or the offset of the instruction that did not decode.
// Every RET must also be an instruction boundary of the decoded body.
func scanReturns(arch string, code []byte) (rets []int, bad int, err error) {
	const entry = 0x401000
	b, err := disasm.Decode(arch, "f", entry, 0, code)
	if err != nil {
		var de *disasm.DecodeError
		if errors.As(err, &de) {
			bad = int(de.Offset)
		}
		return nil, bad, err
	}
	for _, r := range b.Rets {
		if !b.Boundary(r) {
			return nil, int(r), fmt.Errorf("RET at %d is not an instruction boundary", r)
		}
		rets = append(rets, int(r))
	}
	return rets, 0, nil
}

func isRET(arch string, b []byte) bool {
	if arch == "arm64" {
		inst, err := arm64asm.Decode(b)
		return err == nil && inst.Op == arm64asm.RET
	}
	inst, err := x86asm.Decode(b, 64)
	return err == nil && inst.Op == x86asm.RET
}

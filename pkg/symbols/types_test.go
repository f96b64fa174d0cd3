package symbols

import (
	"debug/elf"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
)

// The itabs read through the moduledata are those the unstripped build's
// symbol table names (go:itab.TYPE,INTERFACE), on every target: Go 1.18 to
// 1.26, amd64 and arm64, PIE, external linking, stripped; and each itab's
// hash is its type's.
func TestItabs(t *testing.T) {
	pkgPath := regexp.MustCompile(`[\w.\-]+/`) // %T prints a package's name, not its path
	for _, tg := range symtest.Targets(t) {
		if tg.Stripped {
			continue
		}
		ef, err := elf.Open(tg.Path)
		if err != nil {
			t.Fatal(err)
		}
		syms, err := ef.Symbols()
		ef.Close()
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, s := range syms {
			// go.itab. before Go 1.20.
			if rest, ok := strings.CutPrefix(strings.Replace(s.Name, "go.itab.", "go:itab.", 1), "go:itab."); ok {
				want = append(want, pkgPath.ReplaceAllString(rest, ""))
			}
		}
		slices.Sort(want)
		if !slices.Contains(want, "*errors.errorString,error") {
			t.Fatalf("%s: symbol table itabs %q", tg, want)
		}
		for _, tg := range []*symtest.Target{tg, symtest.StrippedSibling(t, tg)} {
			if tg == nil {
				continue
			}
			its, err := openTarget(t, tg).Itabs()
			if err != nil {
				t.Errorf("%s: %v", tg, err)
				continue
			}
			var got []string
			hashes := map[string]uint32{}
			for _, it := range its {
				got = append(got, it.Type+","+it.Interface)
				if h, ok := hashes[it.Type]; ok && h != it.Hash {
					t.Errorf("%s: %s has hashes %#x and %#x", tg, it.Type, h, it.Hash)
				}
				hashes[it.Type] = it.Hash
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("%s: itabs\n%q\nthe symbol table names\n%q", tg, got, want)
			}
		}
	}
}

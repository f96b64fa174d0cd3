package presets_test

import (
	"context"
	"testing"

	"github.com/cilium-tracer/tracer/internal/ciliumsrc"
	"github.com/cilium-tracer/tracer/pkg/presets"
)

// Every function of every preset is declared, as named (receiver and
// all), in the source of every release the catalogue supports, read from
// cilium's module on the Go module proxy (cached under the user cache
// directory, ciliumsrc.CacheDir: about 115 MB a release, zip and unpacked,
// downloaded once).
func TestFunctionsInSource(t *testing.T) {
	ctx := context.Background()
	n := 0
	for _, v := range presets.Releases {
		rel, err := ciliumsrc.Open(ctx, v)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range presets.All {
			for _, f := range p.For(presets.MinorOf(v)) {
				names = append(names, f.Name)
			}
		}
		found, err := rel.Declares(names)
		if err != nil {
			t.Fatalf("cilium %s: %v", v, err)
		}
		for _, name := range names {
			if !found[name] {
				t.Errorf("cilium %s does not declare %s", v, name)
			}
			n++
		}
	}
	t.Logf("%d releases, %d preset functions declared", len(presets.Releases), n)
}

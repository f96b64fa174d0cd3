package presets

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
)

// Every preset names functions in every minor, each once, each with
// captures the probes can take.
func TestPresetData(t *testing.T) {
	names := map[string]bool{}
	for _, p := range All {
		if names[p.Name] || p.Name == "" || p.Description == "" || strings.ContainsAny(p.Name, " \t,") {
			t.Errorf("preset %q: duplicate, unnamed, undescribed or with a name that cannot be a flag value", p.Name)
		}
		names[p.Name] = true
		for _, f := range p.Funcs {
			for _, m := range f.Minors {
				if !slices.Contains(Minors, m) {
					t.Errorf("%s: %s: minor %s is not in Minors", p.Name, f.Name, m)
				}
			}
		}
		for _, minor := range Minors {
			fns := p.For(minor)
			if len(fns) == 0 {
				t.Errorf("%s: no functions in %s", p.Name, minor)
			}
			seen := map[string]bool{}
			for _, f := range fns {
				if seen[f.Name] || !strings.HasPrefix(f.Name, "github.com/cilium/cilium/") || strings.ContainsAny(f.Name, "*?") && !strings.Contains(f.Name, "(*") {
					t.Errorf("%s %s: %s is listed twice, outside cilium or a glob", p.Name, minor, f.Name)
				}
				seen[f.Name] = true
				if len(f.Captures) > probe.MaxCaptures {
					t.Errorf("%s: %d captures, the probes take %d", f.Name, len(f.Captures), probe.MaxCaptures)
				}
				capNames := map[string]bool{}
				for _, c := range f.Captures {
					name, _, err := args.ParseCaptureFlag(c)
					if err != nil || capNames[name] {
						t.Errorf("%s: capture %q: %v (or a name given twice)", f.Name, c, err)
					}
					capNames[name] = true
				}
			}
		}
	}
}

func TestLookup(t *testing.T) {
	for _, n := range Names() {
		if p, err := Lookup(n); err != nil || p.Name != n {
			t.Errorf("Lookup(%s) = %v, %v", n, p, err)
		}
	}
	_, err := Lookup("endpoint")
	if err == nil || err.Error() != `unknown preset "endpoint" (presets: endpoint-regeneration, policy, identity, ipcache, kvstore, datapath)` {
		t.Errorf("Lookup(endpoint): %v", err)
	}
}

// The catalogue has every release for both architectures, each with every
// Go minor release from its go.mod's on; a Go release it was not computed
// for gets the layout all others share, and none when they differ.
func TestCatalogue(t *testing.T) {
	for _, r := range Releases {
		for _, arch := range []string{"amd64", "arm64"} {
			n := 0
			for b := range builds {
				if b.release == r && b.arch == arch {
					n++
				}
			}
			if n == 0 {
				t.Errorf("%s %s: no builds", r, arch)
			}
			if _, err := layout(r, arch, 99); err != nil {
				t.Errorf("%s %s, a future Go: %v", r, arch, err)
			}
		}
		if !slices.Contains(Minors, MinorOf(r)) {
			t.Errorf("%s: no presets for its minor", r)
		}
	}
	// Every entry reads back; an error result is the last of its
	// function's, as the probes want it.
	errResults := 0
	for _, l := range layouts {
		for fn, entries := range l {
			for i, e := range entries {
				name, raw, _ := strings.Cut(e, "=")
				c, err := args.ParseRawCapture(name, raw)
				if err != nil {
					t.Errorf("%s: %v", fn, err)
				}
				if c.Kind == args.KindError {
					errResults++
					if i != len(entries)-1 {
						t.Errorf("%s: error result %q not last", fn, e)
					}
				}
			}
		}
	}
	if errResults == 0 {
		t.Error("no error results in the catalogue")
	}
	if _, err := layout("v1.15.0", "amd64", 24); err == nil || !strings.Contains(err.Error(), "not in the presets' offsets catalogue") {
		t.Errorf("v1.15.0: %v", err)
	}
	if _, err := layout(Releases[0], "riscv64", 24); err == nil {
		t.Error("riscv64: a layout")
	}

	// Offsets that depend on the Go release: only a computed one has
	// them.
	saved := maps.Clone(builds)
	defer func() { builds = saved }()
	r := Releases[len(Releases)-1]
	layouts = append(layouts, map[string][]string{})
	builds[build{r, "amd64", 26}] = len(layouts) - 1
	defer func() { layouts = layouts[:len(layouts)-1] }()
	if _, err := layout(r, "amd64", 99); err == nil || !strings.Contains(err.Error(), "depend on the Go release") {
		t.Errorf("layouts differing by Go release: %v", err)
	}
	if l, err := layout(r, "amd64", 26); err != nil || len(l) != 0 {
		t.Errorf("the Go release computed: %v %v", l, err)
	}
}

package presets_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/ciliumlab"
	"github.com/cilium-tracer/tracer/pkg/presets"
	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/session"
	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
)

// On the real cilium-agent of each release the lab builds, stripped and
// unstripped: every preset function is in the binary and the RET scan
// accepts its body, and every capture the catalogue gives the stripped
// build (computed from the source, no DWARF involved) equals the capture
// resolved from the DWARF of the unstripped build: same register, offsets,
// kind and size; so does each function's error result, where DWARF says
// it returns one. The lab builds with -trimpath, so the binaries do not say
// their release: it is given, as --cilium-version does.
func TestRealAgent(t *testing.T) {
	for _, version := range []string{ciliumlab.Pinned, ciliumlab.Previous} {
		t.Run(version, func(t *testing.T) {
			b := labBuild(t, version)
			dwarf := open(t, b.Agent)
			stripped := open(t, b.AgentStripped)
			if !dwarf.HasDWARF || stripped.HasDWARF {
				t.Fatalf("DWARF: unstripped %v, stripped %v", dwarf.HasDWARF, stripped.HasDWARF)
			}
			funcs, captures, errResults := 0, 0, 0
			for _, p := range presets.All {
				want, err := presets.Select(dwarf, []string{p.Name}, presets.Options{Release: version})
				if err != nil {
					t.Fatal(err)
				}
				got, err := presets.Select(stripped, []string{p.Name}, presets.Options{Release: version})
				if err != nil {
					t.Fatal(err)
				}
				for _, sel := range []*presets.Selection{want, got} {
					for _, w := range sel.Warnings {
						t.Errorf("%s: %s", p.Name, w)
					}
				}
				if n := len(p.For(presets.MinorOf(version))); len(want.Funcs) != n || len(got.Funcs) != n {
					t.Errorf("%s: %d functions in the unstripped build, %d in the stripped one; the preset names %d", p.Name, len(want.Funcs), len(got.Funcs), n)
				}
				for _, f := range []*symbols.File{dwarf, stripped} {
					probes, refused, err := session.ResolvePresets(f, want, probe.Config{})
					if err != nil {
						t.Fatalf("%s: %v", p.Name, err)
					}
					for _, r := range refused {
						t.Errorf("%s: RET scan refuses %s: %v", p.Name, r.Func, r.Reason)
					}
					if len(probes)+len(refused) != len(want.Funcs) {
						t.Errorf("%s: %d probes and %d refused of %d functions", p.Name, len(probes), len(refused), len(want.Funcs))
					}
				}
				fns := make([]symbols.Func, len(want.Funcs))
				for i, w := range want.Funcs {
					fns[i] = w.Func
				}
				r := args.NewCaptureResolver(dwarf, fns)
				for i, w := range want.Funcs {
					if i >= len(got.Funcs) || got.Funcs[i].Func.Name != w.Func.Name {
						t.Errorf("%s: function %d is %s unstripped, not in the stripped build", p.Name, i, w.Func.Name)
						continue
					}
					g := got.Funcs[i]
					wantErr, ok, err := r.ErrorResult(w.Func)
					switch {
					case err != nil:
						t.Errorf("%s: results from DWARF: %v", w.Func.Name, err)
					case ok != (g.ErrorResult != nil) || ok && !sameCapture(*g.ErrorResult, wantErr):
						t.Errorf("%s: error result: catalogue %v, DWARF says %s (%v)", w.Func.Name, g.ErrorResult, show(wantErr), ok)
					case ok:
						errResults++
					}
					if len(g.Captures) != len(w.Captures) {
						t.Errorf("%s: %d captures from the catalogue, %d from DWARF", w.Func.Name, len(g.Captures), len(w.Captures))
						continue
					}
					for j := range w.Captures {
						if !sameCapture(g.Captures[j], w.Captures[j]) {
							t.Errorf("%s: %s: catalogue %s, DWARF says %s", w.Func.Name, w.Captures[j].Name, show(g.Captures[j]), show(w.Captures[j]))
						}
						captures++
					}
				}
				funcs += len(want.Funcs)
			}
			// Every preset at once: each function once.
			all, err := presets.Select(stripped, presets.Names(), presets.Options{Release: version})
			if err != nil {
				t.Fatal(err)
			}
			distinct := 0
			for _, fn := range all.Funcs {
				distinct += len(fn.Captures)
			}
			t.Logf("cilium %s: %d functions (%d in the presets, some in two), %d captures (%d) and %d error results resolved stripped and unstripped, each from the catalogue equal to DWARF's",
				version, len(all.Funcs), funcs, distinct, captures, errResults)
		})
	}
}

// sameCapture compares where and how a value is read; Expr differs by
// design (e.ID against arg0+184:u16).
func sameCapture(a, b args.Capture) bool {
	a.Expr, b.Expr = "", ""
	return a == b
}

func show(c args.Capture) string {
	return fmt.Sprintf("%+v", c)
}

// labBuild returns the lab's cached build of a cilium release, building
// it if it is not there yet (about 15 minutes); a build that fails fails
// the test: no skip.
func labBuild(t *testing.T, version string) *ciliumlab.Binaries {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	b, err := ciliumlab.Build(ctx, version, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func open(t *testing.T, path string) *symbols.File {
	t.Helper()
	f, err := symbols.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

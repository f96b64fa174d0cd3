package presets_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/ciliumsrc"
	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/presets"
	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/session"
	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testagent.Cleanup()
	os.Exit(code)
}

// A stripped stand-in agent traced with the endpoint-regeneration preset
// and no offsets file reports the error each call of regenerateBPF
// returns, type and message, as the agent logs them: the error result
// comes from a catalogue layout that presetgen's code (internal/ciliumsrc)
// computes from the stand-in's source, as it does from cilium's, for the
// captures the preset names (four, and the error result, which takes none
// of the probe's four values).
func TestErrorResultFromCatalogue(t *testing.T) {
	const release = "v1.18.5"
	bin := testagent.Build(t, testagent.Variant{Stripped: true})
	f := open(t, bin)
	if f.HasDWARF {
		t.Fatal("the stripped stand-in has DWARF")
	}
	goMinor, ok := symbols.GoMinor(f.GoVersion)
	if !ok {
		t.Fatalf("go version %q", f.GoVersion)
	}
	ctx := context.Background()
	std, err := ciliumsrc.Std(ctx, goMinor)
	if err != nil {
		t.Fatal(err)
	}
	rel := &ciliumsrc.Release{Version: release, Module: ciliumsrc.Module{Path: ciliumsrc.ModulePath, Dir: filepath.Join(testagent.Root(), "examples", "agent")}}
	p, err := presets.Lookup("endpoint-regeneration")
	if err != nil {
		t.Fatal(err)
	}
	req := ciliumsrc.Request{Func: testagent.RegenerateBPF}
	for _, fn := range p.For(presets.MinorOf(release)) {
		if fn.Name != req.Func {
			continue
		}
		for _, c := range fn.Captures {
			name, expr, _ := strings.Cut(c, "=")
			req.Captures = append(req.Captures, [2]string{name, expr})
		}
	}
	caps, _, err := rel.Resolve(ctx, runtime.GOARCH, std, []ciliumsrc.Request{req})
	if err != nil {
		t.Fatal(err)
	}
	l := map[string][]string{}
	for fn, cs := range caps {
		for _, c := range cs {
			l[fn] = append(l[fn], c.Name+"="+c.Expr)
		}
	}
	// The same as the DWARF of the stand-in's unstripped twin says.
	twin := open(t, testagent.Build(t, testagent.Variant{}))
	fns, err := twin.Funcs(testagent.RegenerateBPF)
	if err != nil {
		t.Fatal(err)
	}
	r := args.NewCaptureResolver(twin, fns)
	var fromDWARF []string
	for _, nc := range req.Captures {
		c, err := r.Resolve(fns[0], nc[0], nc[1])
		if err != nil {
			t.Fatal(err)
		}
		fromDWARF = append(fromDWARF, c.Name+"="+c.Raw())
	}
	if c, ok, err := r.ErrorResult(fns[0]); err != nil || !ok {
		t.Fatalf("DWARF: no error result: %v", err)
	} else {
		fromDWARF = append(fromDWARF, c.Name+"="+c.Raw())
	}
	if len(fromDWARF) != 5 || !slices.Equal(l[testagent.RegenerateBPF], fromDWARF) {
		t.Fatalf("the stand-in's layout from its source: %q, DWARF says %q", l, fromDWARF)
	}
	presets.SetLayout(t, release, runtime.GOARCH, goMinor, l)

	agent := testagent.Start(t, bin, "-wait-start", "-workers", "4", "-iterations", "10",
		"-interval", "2ms", "-policy-depth", "1", "-fail-every", "2", "-log-bpf")
	var selected []args.Capture
	s, err := session.Start(session.Config{PID: agent.PID, Resolve: func(f *symbols.File) ([]probe.Probe, []session.Refused, error) {
		sel, err := presets.Select(f, []string{p.Name}, presets.Options{Release: release})
		if err != nil {
			return nil, nil, err
		}
		// The other preset functions the stand-in has are not what
		// this test is about.
		sel.Funcs = slices.DeleteFunc(sel.Funcs, func(fn presets.Selected) bool { return fn.Func.Name != testagent.RegenerateBPF })
		probes, refused, err := session.ResolvePresets(f, sel, probe.Config{})
		if len(probes) == 1 {
			selected = probes[0].Captures
		}
		return probes, refused, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if len(selected) != 5 || selected[4] != args.ErrorResultIn(1) {
		t.Fatalf("captures %+v, want the preset's four and the error result in registers 1 and 2", selected)
	}
	agent.Begin(t)
	var got []calls.Call
	// Only a guard against a hang.
	runCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := s.Run(runCtx, func(c *calls.Call) { got = append(got, *c) }); !errors.Is(err, session.ErrTargetExited) {
		t.Fatalf("Run: %v, want the target to exit", err)
	}
	agent.Wait(t, 10*time.Second)

	// Without a capture that numbers the calls, they are compared as a
	// multiset: each error type and message (six kinds, and none) as
	// many times as the agent logged it.
	var want, traced []string
	failed := 0
	for _, c := range agent.BPFCalls(t) {
		w := testagent.BPFCall{ErrType: c.ErrType, Message: c.Message}
		if c.ErrType != "" {
			failed++
		}
		want = append(want, w.Want())
	}
	for _, c := range got {
		typ, msg := "", ""
		if c.Error != nil {
			typ, msg = c.Error.Type, c.Error.Message
		}
		if c.Unfinished {
			t.Errorf("call %+v unfinished", c)
		}
		// The four values beside the error: the stand-in names each
		// endpoint's pod xwing-ID, in namespace default.
		attrs := map[string]string{}
		for _, a := range c.Attrs {
			attrs[a.Key] = a.Value
		}
		if len(c.Attrs) != 4 || attrs["endpoint_id"] == "" || attrs["pod"] != "xwing-"+attrs["endpoint_id"] || attrs["namespace"] != "default" || attrs["policy_revision"] == "" {
			t.Errorf("call attributes %v", c.Attrs)
		}
		traced = append(traced, testagent.Describe("", "", typ, msg))
	}
	slices.Sort(want)
	slices.Sort(traced)
	if len(want) != 40 || failed != 20 || !slices.Equal(traced, want) {
		t.Errorf("traced:\n%s\nthe agent logged (%d calls, %d failed):\n%s", strings.Join(traced, "\n"), len(want), failed, strings.Join(want, "\n"))
	}
	t.Logf("%d calls traced, %d errors, as the agent logged them; e.g. %s", len(traced), failed, traced[len(traced)-1])
}

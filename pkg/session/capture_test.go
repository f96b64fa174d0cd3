package session_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/session"
	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
	"github.com/cilium-tracer/tracer/pkg/symbols/offsets"
)

var captures = []string{
	"endpoint_id=e.ID",
	"pod=e.K8sPodName",
	"policy_revision=e.desiredPolicy.Revision",
	"panic_every=m.PanicEvery", // only AllocateIdentity has m
	// resolvePolicyLocked(r, seq, id, depth): the fourth integer register.
	"depth=depth",
	// 2 GiB past the receiver: nothing is mapped there, the read faults.
	"fault=arg0+0x7fff0000:u64",
}

const capturePanicEvery = 3

// offsetsFor generates the offsets file for captures from the unstripped
// build of v's toolchain, as `tracer offsets` does.
func offsetsFor(t *testing.T, v testagent.Variant, captures []string) *offsets.File {
	t.Helper()
	v.Stripped = false
	f, err := symbols.Open(testagent.Build(t, v))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var fns []symbols.Func
	for _, name := range []string{testagent.RegenerateBPF, testagent.Allocate, testagent.ResolvePolicy} {
		fs, err := f.Funcs(name)
		if err != nil {
			t.Fatal(err)
		}
		fns = append(fns, fs...)
	}
	var pairs [][2]string
	for _, c := range captures {
		name, expr, err := args.ParseCaptureFlag(c)
		if err != nil {
			t.Fatal(err)
		}
		pairs = append(pairs, [2]string{name, expr})
	}
	o, err := offsets.New(f, fns, pairs)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// The regenerateBPF spans carry the endpoint the agent says it regenerated:
// an integer field not at offset 0, a string field and a field behind a
// pointer; the panicking AllocateIdentity calls carry theirs too.
func TestCaptureAgent(t *testing.T) {
	for _, v := range []testagent.Variant{
		{},
		{Stripped: true},
		{Toolchain: "go1.22.12"},
		{Toolchain: "go1.22.12", Stripped: true, PIE: true},
	} {
		t.Run(v.String(), func(t *testing.T) {
			cfg := session.Config{Funcs: []string{testagent.RegenerateBPF, testagent.Allocate, testagent.ResolvePolicy}, Captures: captures}
			if v.Stripped {
				cfg.Offsets = offsetsFor(t, v, captures)
			}
			got, agent := runCaptures(t, testagent.Build(t, v), cfg)
			checkCaptures(t, got, agent)
		})
	}
}

func runCaptures(t *testing.T, bin string, cfg session.Config) ([]calls.Call, *testagent.Agent) {
	t.Helper()
	agent := testagent.Start(t, bin, "-wait-start", "-workers", "8", "-iterations", "5",
		"-interval", "2ms", "-policy-depth", "2", "-policy-sleep", "100us",
		"-panic-every", fmt.Sprint(capturePanicEvery), "-log-regenerations")
	got, _, _ := traceAll(t, agent, cfg)
	return got, agent
}

func checkCaptures(t *testing.T, got []calls.Call, agent *testagent.Agent) {
	t.Helper()
	var want, traced []string
	for _, reg := range agent.Regenerations() {
		want = append(want, fmt.Sprintf("endpoint_id=%s pod=%s policy_revision=%s", reg.EndpointID, reg.Pod, reg.PolicyRevision))
	}
	panicked := 0
	depths := map[string]int{}
	for _, c := range got {
		attrs := map[string]string{}
		var keys []string
		for _, a := range c.Attrs {
			attrs[a.Key] = a.Value
			keys = append(keys, a.Key)
		}
		switch c.Func {
		case testagent.RegenerateBPF:
			if strings.Join(keys, ",") != "endpoint_id,pod,policy_revision,fault" || attrs["fault"] != "" {
				t.Fatalf("regenerateBPF attributes %v", c.Attrs)
			}
			traced = append(traced, fmt.Sprintf("endpoint_id=%s pod=%s policy_revision=%s",
				attrs["endpoint_id"], attrs["pod"], attrs["policy_revision"]))
		case testagent.Allocate:
			if attrs["panic_every"] != fmt.Sprint(capturePanicEvery) || strings.Join(keys, ",") != "panic_every,fault" {
				t.Errorf("AllocateIdentity attributes %v (unfinished %v), want panic_every=%d", c.Attrs, c.Unfinished, capturePanicEvery)
			}
			if c.Unfinished {
				panicked++
			}
		case testagent.ResolvePolicy:
			depths[attrs["depth"]]++
		}
	}
	// Each resolution recurses from depth 2 to 1.
	if len(depths) != 2 || depths["1"] != depths["2"] || depths["1"] != len(want) {
		t.Errorf("resolvePolicyLocked depths %v, want %d of 2 and of 1", depths, len(want))
	}
	sort.Strings(want)
	sort.Strings(traced)
	if len(want) == 0 || strings.Join(want, "\n") != strings.Join(traced, "\n") {
		t.Errorf("traced regenerations:\n%s\nthe agent logged:\n%s", strings.Join(traced, "\n"), strings.Join(want, "\n"))
	}
	if panicked == 0 {
		t.Error("no unfinished AllocateIdentity call")
	}
}

// Calls still in flight when tracing stops carry their values too.
func TestCaptureInFlight(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	agent := testagent.Start(t, bin, "-wait-start", "-workers", "2", "-iterations", "1", "-bpf-sleep", "5s", "-policy-depth", "0")
	s, err := session.Start(session.Config{PID: agent.PID, Funcs: []string{testagent.RegenerateBPF}, Captures: captures[:2]})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	agent.Begin(t)
	var got []calls.Call
	ctx, cancel := context.WithTimeout(context.Background(), 3500*time.Millisecond)
	defer cancel()
	if err := s.Run(ctx, func(c *calls.Call) { got = append(got, *c) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d calls, want the 2 in flight", len(got))
	}
	for _, c := range got {
		if !c.Unfinished || len(c.Attrs) != 2 || c.Attrs[0].Value == "" || c.Attrs[1].Value != "xwing-"+c.Attrs[0].Value {
			t.Errorf("in-flight call: unfinished %v, attributes %v", c.Unfinished, c.Attrs)
		}
	}
}

// Bad captures are refused before anything is attached, naming what exists.
func TestCaptureRefused(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	agent := testagent.Start(t, bin, "-workers", "1", "-interval", "10ms")
	for _, tc := range []struct {
		capture string
		want    string
	}{
		{"id=ep.ID", `capture "ep.ID": no argument "ep" in ` + testagent.RegenerateBPF + ` (available: e, ctx)`},
		{"id=e.Id", `no field "Id" in github.com/cilium/cilium/pkg/endpoint.Endpoint (available: mutex, owner, ID, K8sPodName,`},
		{"rev=e.desiredPolicy.Rev", `(available: Identity, Rules, Revision)`},
		{"labels=lbls", "supported: integers, bool, pointers, strings"},
		{"x", "want NAME=EXPR"},
	} {
		_, err := session.Start(session.Config{PID: agent.PID, Funcs: []string{testagent.RegenerateBPF, testagent.Allocate}, Captures: []string{tc.capture}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.capture, err, tc.want)
		}
	}

	// An offsets file from another build of the agent: go1.22.12's.
	stripped := testagent.Build(t, testagent.Variant{Stripped: true})
	other := offsetsFor(t, testagent.Variant{Toolchain: "go1.22.12"}, captures[:1])
	agent2 := testagent.Start(t, stripped, "-workers", "1", "-interval", "10ms")
	_, err := session.Start(session.Config{PID: agent2.PID, Funcs: []string{testagent.RegenerateBPF}, Captures: captures[:1], Offsets: other})
	if !errors.Is(err, offsets.ErrMismatch) {
		t.Errorf("offsets of another build: %v, want ErrMismatch", err)
	}
	// A stripped binary without offsets: the raw form or an offsets file.
	_, err = session.Start(session.Config{PID: agent2.PID, Funcs: []string{testagent.RegenerateBPF}, Captures: captures[:1]})
	if !errors.Is(err, args.ErrNoDWARF) {
		t.Errorf("stripped without offsets: %v, want ErrNoDWARF", err)
	}
}

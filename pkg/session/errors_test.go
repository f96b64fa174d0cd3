package session_test

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
	"github.com/cilium-tracer/tracer/pkg/session"
)

// What regenerateBPF's captures name: its regeneration's number, read at
// entry, and its integer result, read at each RET.
var resultCaptures = []string{"seq=ctx.seq", "rev=ret0"}

var bpfLine = regexp.MustCompile(`^regenerateBPF seq=(\d+) revnum=(\d+) error_type=(\S+) error=(".*")$`)

// The error kinds whose messages are read in BPF; of the agent's own type
// only the type is known.
var readable = map[string]bool{
	"*errors.errorString": true, "*fmt.wrapError": true, "*fs.PathError": true, "*os.SyscallError": true, "*exec.ExitError": true,
}

// Every failing regenerateBPF call (each error kind in turn) gets the
// error's type and, for the kinds read in BPF, the message the agent
// logged; no other call gets an error; its integer result is the one the
// agent logged, for every call. On every Go version, stripped (through the
// offsets file of the unstripped twin) and PIE.
func TestErrorReturns(t *testing.T) {
	for _, v := range testagent.Matrix {
		t.Run(v.String(), func(t *testing.T) { errorReturns(t, v, nil) })
	}
	for _, mode := range []kernel.Mode{{Cookies: true}, {}} {
		t.Run(mode.String(), func(t *testing.T) { errorReturns(t, testagent.Variant{PIE: true}, &mode) })
	}
}

func errorReturns(t *testing.T, v testagent.Variant, mode *kernel.Mode) {
	cfg := session.Config{Funcs: []string{testagent.RegenerateBPF}, Captures: resultCaptures, Mode: mode}
	if v.Stripped {
		cfg.Offsets = offsetsFor(t, v, resultCaptures)
	}
	agent := testagent.Start(t, testagent.Build(t, v), "-wait-start", "-workers", "4", "-iterations", "10",
		"-interval", "2ms", "-policy-depth", "1", "-fail-every", "2", "-log-bpf")
	got, _, _ := traceAll(t, agent, cfg)

	want := map[string]string{} // by seq
	kinds := map[string]int{}
	for _, l := range agent.Lines() {
		m := bpfLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		msg, err := strconv.Unquote(m[4])
		if err != nil {
			t.Fatal(err)
		}
		typ := m[3]
		switch {
		case typ == "-":
			typ = ""
		case !readable[typ]:
			msg = ""
		}
		kinds[typ]++
		want[m[1]] = describe(m[2], typ, msg)
	}
	if len(want) != 40 || len(kinds) != 7 {
		t.Fatalf("agent logged %d regenerateBPF calls of error kinds %v, want 40 of 6 kinds and none", len(want), kinds)
	}
	traced := map[string]string{}
	for _, c := range got {
		attrs := map[string]string{}
		for _, a := range c.Attrs {
			attrs[a.Key] = a.Value
		}
		typ, msg := "", ""
		if c.Error != nil {
			typ, msg = c.Error.Type, c.Error.Message
		}
		if _, dup := traced[attrs["seq"]]; dup || c.Unfinished {
			t.Errorf("call %+v: twice, or unfinished", c)
		}
		traced[attrs["seq"]] = describe(attrs["rev"], typ, msg)
	}
	for seq, w := range want {
		if traced[seq] != w {
			t.Errorf("regeneration %s: traced %q, the agent logged %q", seq, traced[seq], w)
		}
	}
	if len(traced) != len(want) {
		t.Errorf("traced %d calls, the agent made %d", len(traced), len(want))
	}
}

func describe(rev, typ, msg string) string {
	return fmt.Sprintf("rev=%s error_type=%s error=%q", rev, typ, msg)
}


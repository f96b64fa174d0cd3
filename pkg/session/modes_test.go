package session_test

import (
	"testing"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
	"github.com/cilium-tracer/tracer/pkg/session"
)

// The fallbacks for older kernels, forced on this one, pass the core checks
// and the captures: perf uprobes with attach cookies (Linux 5.15 to 6.5, and
// 6.6 to 6.9 whose uprobe_multi filters PIDs by thread), and perf uprobes
// without cookies, which run the objects built for Linux 5.10 and find the
// probe by the address that fired: PIE moves that address.
func TestFallbackModes(t *testing.T) {
	for _, mode := range []kernel.Mode{{Cookies: true}, {}} {
		t.Run(mode.String(), func(t *testing.T) {
			for _, v := range []testagent.Variant{{}, {Stripped: true, PIE: true}} {
				t.Run(v.String(), func(t *testing.T) { traceAgent(t, testagent.Build(t, v), &mode) })
			}
			t.Run("captures", func(t *testing.T) {
				v := testagent.Variant{PIE: true}
				cfg := session.Config{Funcs: []string{testagent.RegenerateBPF, testagent.Allocate, testagent.ResolvePolicy}, Captures: captures, Mode: &mode}
				got, agent := runCaptures(t, testagent.Build(t, v), cfg)
				checkCaptures(t, got, agent)
			})
		})
	}
}

package daemon

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
)

// A probe's capture_returns and the errors its function returns reach the
// daemon's spans: each call's result and error as the agent logged them.
func TestDaemonErrorReturns(t *testing.T) {
	agent := testagent.Start(t, testagent.Build(t, testagent.Variant{}), "-wait-start", "-workers", "4", "-iterations", "6",
		"-interval", "2ms", "-policy-depth", "1", "-fail-every", "2", "-log-bpf")
	r := startDaemon(t, `
probes:
  - func: "`+testagent.RegenerateBPF+`"
    captures: ["`+testagent.ResultCaptures[0]+`"]
    capture_returns: ["`+testagent.ResultCaptures[1]+`"]
governor: {budget_percent: 50}
`, agent.PID)
	agent.Begin(t)
	agent.Wait(t, 30*time.Second)
	r.waitDetached(t)
	r.stop(t)

	var want, got []string
	for _, c := range agent.BPFCalls(t) {
		want = append(want, c.Want())
	}
	for _, s := range r.parseSpans(t, agent.PID) {
		var typ, msg string
		if e := s.Error; e != nil {
			typ, msg = e.Type, e.Message
		}
		got = append(got, testagent.Describe(s.Attrs["seq"], s.Attrs["rev"], typ, msg))
	}
	slices.Sort(want)
	slices.Sort(got)
	if len(want) != 24 || !slices.Equal(got, want) {
		t.Errorf("spans:\n%s\nagent logged:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

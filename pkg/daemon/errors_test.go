package daemon

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
)

var bpfLine = regexp.MustCompile(`^regenerateBPF seq=(\d+) revnum=(\d+) error_type=(\S+) error=(".*")$`)

// A probe's capture_returns and the errors its function returns reach the
// daemon's spans: each call's result and error as the agent logged them.
func TestDaemonErrorReturns(t *testing.T) {
	agent := testagent.Start(t, testagent.Build(t, testagent.Variant{}), "-wait-start", "-workers", "4", "-iterations", "6",
		"-interval", "2ms", "-policy-depth", "1", "-fail-every", "2", "-log-bpf")
	r := startDaemon(t, `
probes:
  - func: "`+testagent.RegenerateBPF+`"
    captures: ["seq=ctx.seq"]
    capture_returns: ["rev=ret0"]
governor: {budget_percent: 50}
`, agent.PID)
	agent.Begin(t)
	agent.Wait(t, 30*time.Second)
	r.waitDetached(t)
	r.stop(t)

	var want, got []string
	for _, l := range agent.Lines() {
		m := bpfLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		msg, _ := strconv.Unquote(m[4])
		switch m[3] {
		case "-":
			m[3] = ""
		case "*endpoint.compileError":
			msg = ""
		}
		want = append(want, fmt.Sprintf("seq=%s rev=%s type=%s message=%q", m[1], m[2], m[3], msg))
	}
	for _, s := range r.parseSpans(t, agent.PID) {
		var typ, msg string
		if e := s.Error; e != nil {
			typ, msg = e.Type, e.Message
		}
		got = append(got, fmt.Sprintf("seq=%s rev=%s type=%s message=%q", s.Attrs["seq"], s.Attrs["rev"], typ, msg))
	}
	slices.Sort(want)
	slices.Sort(got)
	if len(want) != 24 || !slices.Equal(got, want) {
		t.Errorf("spans:\n%q\nagent logged:\n%q", got, want)
	}
}

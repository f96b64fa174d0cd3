package ciliumlab

import (
	"strings"
	"testing"
	"time"
)

// The two log formats: cilium v1.18 logs with slog, v1.17 with logrus,
// which quotes a value holding "µ".
func TestScanRegenerations(t *testing.T) {
	log := `time=2026-11-30T19:43:24.449Z level=debug source=github.com/cilium/cilium/pkg/endpoint/policy.go:631 msg="Completed endpoint regeneration" ciliumEndpointName=/ endpointID=1623 reason="endpoint config" total=108.9ms waitingForLock=1.2µs
time=2026-11-30T20:15:11.235218818Z level=debug msg="Completed endpoint regeneration" bpfCompilation=0s endpointID=1887 mapSync=115ns total="439.81µs" subsys=endpoint
time="2026-11-30T20:15:12Z" level=warning msg="Regeneration of endpoint failed" endpointID=77 error="boom" subsys=endpoint
time="2026-11-30T20:15:12Z" level=debug msg="Completed endpoint regeneration with no pending regeneration requests" endpointID=77 subsys=endpoint
`
	type got struct {
		ep    uint16
		total time.Duration
		ok    bool
	}
	var gs []got
	if err := scanRegenerations(strings.NewReader(log), func(ep uint16, total time.Duration, ok bool) {
		gs = append(gs, got{ep, total, ok})
	}); err != nil {
		t.Fatal(err)
	}
	want := []got{{1623, 108900 * time.Microsecond, true}, {1887, 439810 * time.Nanosecond, true}, {77, 0, false}}
	if len(gs) != len(want) {
		t.Fatalf("got %v, want %v", gs, want)
	}
	for i := range want {
		if gs[i] != want[i] {
			t.Errorf("line %d: got %v, want %v", i, gs[i], want[i])
		}
	}
}

// The check holds the stretch the agent timed to 1% of cilium's sum, and
// lets a call run on past the agent's clock, as the one that took 7 ms
// more in its log write did.
func TestCheck(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	truth := Truth{
		From:    Mark{Time: t0, PID: 7},
		To:      Mark{Time: t0.Add(time.Minute), PID: 7},
		Count:   2,
		Seconds: 0.2,
		Logged:  map[uint16][]time.Duration{1: {100 * time.Millisecond}, 2: {100 * time.Millisecond}},
	}
	call := func(ep uint16, at, timed, whole time.Duration) Call {
		return Call{PID: 7, EndpointID: ep, Start: t0.Add(at), Timed: timed, Duration: whole}
	}
	ms := time.Millisecond
	for _, tc := range []struct {
		name  string
		calls []Call
		want  string // in the error; "" for none
	}{
		{"agrees", []Call{call(1, ms, 100*ms+5000, 101*ms), call(2, 2*ms, 100*ms+7000, 100*ms+9000)}, ""},
		{"a call runs on past the agent's clock", []Call{call(1, ms, 100*ms+5000, 108*ms), call(2, 2*ms, 100*ms, 100*ms)}, ""},
		{"timed stretch 2% long", []Call{call(1, ms, 104*ms, 104*ms), call(2, 2*ms, 100*ms, 100*ms)}, "2.0% apart"},
		{"shorter than the agent's clock", []Call{call(1, ms, 98*ms, 99*ms), call(2, 2*ms, 100*ms, 100*ms)}, "shorter than the agent's own total"},
		{"no updateRegenerationStatistics", []Call{call(1, ms, 0, 101*ms), call(2, 2*ms, 100*ms, 100*ms)}, "no traced updateRegenerationStatistics"},
		{"a call missed", []Call{call(1, ms, 100*ms, 100*ms)}, "cilium counted 2"},
		{"a call outside the marks", []Call{call(1, ms, 100*ms, 100*ms), call(2, 2*time.Minute, 100*ms, 100*ms)}, "cilium counted 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := truth.Check(tc.calls)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("failed: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

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

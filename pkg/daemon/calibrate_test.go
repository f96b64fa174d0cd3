package daemon

import (
	"testing"
	"time"
)

// The cost measured on this node is a trap pair: tens of microseconds on
// these VMs, never the nanoseconds of a plain call.
func TestMeasureCost(t *testing.T) {
	for _, stacks := range []bool{false, true} {
		cost, err := MeasureCost(stacks)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("stacks=%v: %v per traced call", stacks, cost)
		if cost < time.Microsecond || cost > 5*time.Millisecond {
			t.Errorf("stacks=%v: %v per traced call, want microseconds", stacks, cost)
		}
	}
}

// A run of the syscall programs in a process they do not follow is a map
// lookup or two: tens to hundreds of nanoseconds, never the microseconds
// of a trap.
func TestMeasureSyscallCost(t *testing.T) {
	cost, err := MeasureSyscallCost()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v per run of the syscall programs", cost)
	if cost > 5*time.Microsecond {
		t.Errorf("%v per run of the syscall programs, want nanoseconds", cost)
	}
}

package torture

import (
	"runtime"
	"sync"

	"github.com/cilium/cilium/pkg/groundtruth"
)

// StepName is Step's symbol name.
const StepName = "github.com/cilium/cilium/pkg/torture.Step"

var stepCalls *groundtruth.Counter

// Step returns at once, or, given a gate, reports that it is in flight,
// waits for the gate to close and ends its goroutine with runtime.Goexit:
// the call never returns.
//
//go:noinline
func Step(inFlight *sync.WaitGroup, gate <-chan struct{}) {
	stepCalls.Call()
	if gate == nil {
		return
	}
	inFlight.Done()
	<-gate
	stepCalls.Panic()
	runtime.Goexit()
}

// stepTwice calls Step twice from the same place, so both calls run at the
// same stack depth on whichever goroutine runs it.
//
//go:noinline
func stepTwice(inFlight *sync.WaitGroup, gate <-chan struct{}) {
	Step(nil, nil)
	Step(inFlight, gate)
}

// GoexitReuse runs n goroutines that each call Step once and then again
// with a gate; once all n wait in their second call, inFlight is called,
// then, when proceed returns, the gate closes and the n goroutines end
// through Goexit inside Step. Then n new goroutines, which the runtime
// gives the dead goroutines' g structures, call Step twice each at the
// same depth and return.
func GoexitReuse(n int, inFlight, proceed func()) {
	stepCalls = groundtruth.New(StepName)
	var blocked, exited sync.WaitGroup
	gate := make(chan struct{})
	blocked.Add(n)
	exited.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			defer exited.Done()
			stepTwice(&blocked, gate)
		}()
	}
	blocked.Wait()
	inFlight()
	proceed()
	close(gate)
	exited.Wait()

	var reused sync.WaitGroup
	reused.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			defer reused.Done()
			stepTwice(nil, nil)
		}()
	}
	reused.Wait()
}

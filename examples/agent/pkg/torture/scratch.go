package torture

import (
	"sync"
	"sync/atomic"

	"github.com/cilium/cilium/pkg/groundtruth"
)

// TracedName is Traced's symbol name.
const TracedName = "github.com/cilium/cilium/pkg/torture.Traced"

var tracedCalls *groundtruth.Counter

// perWorker keeps the argument live in Traced.
var perWorker [16]atomic.Uint64

// Traced is the probed function: its argument, captured at entry, names
// the caller that made the call.
//
//go:noinline
func Traced(worker int) {
	tracedCalls.Call()
	perWorker[worker%len(perWorker)].Add(1)
}

// callers has one function per worker, so the stack of each call to Traced
// says which worker made it.
var callers = [...]func(worker, calls int){
	caller00, caller01, caller02, caller03, caller04, caller05, caller06, caller07,
	caller08, caller09, caller10, caller11, caller12, caller13, caller14, caller15,
}

// MaxCallers is how many workers Callers can run.
const MaxCallers = len(callers)

// Callers runs workers goroutines (at most MaxCallers), worker w calling
// Traced(w) calls times from its own function callerWW.
func Callers(workers, calls int) {
	tracedCalls = groundtruth.New(TracedName)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			callers[w](w, calls)
		}(w)
	}
	wg.Wait()
}

//go:noinline
func caller00(w, n int) {
	for i := 0; i < n; i++ {
		Traced(w)
	}
}

//go:noinline
func caller01(w, n int) {
	for i := 0; i < n; i++ {
		Traced(w)
	}
}

//go:noinline
func caller02(w, n int) {
	for i := 0; i < n; i++ {
		Traced(w)
	}
}

//go:noinline
func caller03(w, n int) {
	for i := 0; i < n; i++ {
		Traced(w)
	}
}

//go:noinline
func caller04(w, n int) {
	for i := 0; i < n; i++ {
		Traced(w)
	}
}

//go:noinline
func caller05(w, n int) {
	for i := 0; i < n; i++ {
		Traced(w)
	}
}

//go:noinline
func caller06(w, n int) {
	for i := 0; i < n; i++ {
		Traced(w)
	}
}

//go:noinline
func caller07(w, n int) {
	for i := 0; i < n; i++ {
		Traced(w)
	}
}

//go:noinline
func caller08(w, n int) {
	for i := 0; i < n; i++ {
		Traced(w)
	}
}

//go:noinline
func caller09(w, n int) {
	for i := 0; i < n; i++ {
		Traced(w)
	}
}

//go:noinline
func caller10(w, n int) {
	for i := 0; i < n; i++ {
		Traced(w)
	}
}

//go:noinline
func caller11(w, n int) {
	for i := 0; i < n; i++ {
		Traced(w)
	}
}

//go:noinline
func caller12(w, n int) {
	for i := 0; i < n; i++ {
		Traced(w)
	}
}

//go:noinline
func caller13(w, n int) {
	for i := 0; i < n; i++ {
		Traced(w)
	}
}

//go:noinline
func caller14(w, n int) {
	for i := 0; i < n; i++ {
		Traced(w)
	}
}

//go:noinline
func caller15(w, n int) {
	for i := 0; i < n; i++ {
		Traced(w)
	}
}

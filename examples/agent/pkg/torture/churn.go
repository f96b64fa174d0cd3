package torture

import (
	"errors"
	"runtime"
	"sync"
	"time"

	"github.com/cilium/cilium/pkg/groundtruth"
)

// WorkName is Work's symbol name.
const WorkName = "github.com/cilium/cilium/pkg/torture.Work"

var workCalls *groundtruth.Counter

// How a call of Work ends.
const (
	workReturns = iota
	workPanics
	workGoexits
	workEnds // how many ways there are
)

var errWork = errors.New("torture.Work panics")

// Work returns, panics, or ends its goroutine through runtime.Goexit, as
// end says. The last two never return: a tracer's frame of such a call
// stays in its goroutine table until it expires, or until a traced call
// on a goroutine that reuses the dead one's g clears it.
//
//go:noinline
func Work(end int) {
	workCalls.Call()
	switch end {
	case workPanics:
		workCalls.Panic()
		panic(errWork)
	case workGoexits:
		workCalls.Panic()
		runtime.Goexit()
	}
}

// work runs one goroutine's call of Work; a panic ends the goroutine,
// recovered.
func work(end int) {
	defer func() {
		if r := recover(); r != nil && r != errWork {
			panic(r)
		}
	}()
	Work(end)
}

// Churn runs rounds for d, then returns how many it ran. A round starts n
// goroutines, and once all of them exist lets each call Work once: a third
// return, a third panic, a third end through Goexit. No g is reused within
// a round, so the frames its dead goroutines leave stay until a tracer
// expires them. The round then rests for rest, while goroutines that call
// nothing traced come and go, reusing the dead goroutines' g structures
// without clearing their frames, as an agent's other goroutines do.
func Churn(d time.Duration, n int, rest time.Duration) int {
	workCalls = groundtruth.New(WorkName)
	rounds := 0
	for end := time.Now().Add(d); time.Now().Before(end); rounds++ {
		var started, done sync.WaitGroup
		gate := make(chan struct{})
		started.Add(n)
		done.Add(n)
		for i := 0; i < n; i++ {
			go func(end int) {
				defer done.Done()
				started.Done()
				<-gate
				work(end)
			}(i % workEnds)
		}
		started.Wait()
		close(gate)
		done.Wait()
		idle(rest, n)
	}
	return rounds
}

// idle starts n goroutines at a time that do nothing, over and over, for
// d.
func idle(d time.Duration, n int) {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		var wg sync.WaitGroup
		wg.Add(n)
		for i := 0; i < n; i++ {
			go wg.Done()
		}
		wg.Wait()
	}
}

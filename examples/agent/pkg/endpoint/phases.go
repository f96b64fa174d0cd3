package endpoint

import (
	"fmt"
	"sync"

	"syscall"
	"time"

	"github.com/cilium/cilium/pkg/groundtruth"
)

// PhasedName is the function whose time goes, in known amounts, to known
// states: the ground truth of a breakdown of where a call's time went.
const PhasedName = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regeneratePhased"

// phasedCalls is registered at the first phased call: the reports of
// agents that make none do not list it.
var (
	phasedOnce  sync.Once
	phasedCalls *groundtruth.Counter
)

// Phases are how long each part of regeneratePhased takes.
type Phases struct {
	CPU     time.Duration // computing
	Mutex   time.Duration // waiting for the endpoint's lock, which another goroutine holds
	Chan    time.Duration // waiting on a channel
	Syscall time.Duration // blocked in read(2) on a pipe
}

func (p Phases) String() string {
	return fmt.Sprintf("cpu_ns=%d mutex_ns=%d chan_ns=%d syscall_ns=%d",
		p.CPU.Nanoseconds(), p.Mutex.Nanoseconds(), p.Chan.Nanoseconds(), p.Syscall.Nanoseconds())
}

// RegeneratePhased runs one phased regeneration and returns what each
// phase took, as the agent measured it.
func (e *Endpoint) RegeneratePhased(want Phases) Phases {
	phasedOnce.Do(func() { phasedCalls = groundtruth.New(PhasedName) })
	seq := groundtruth.Next()
	took := e.regeneratePhased(seq, want)
	groundtruth.Returned(seq)
	return took
}

// regeneratePhased spends want.CPU computing, then waits want.Mutex for
// the endpoint's lock (lockAlive), want.Chan on a channel
// (waitForProxyCompletions) and want.Syscall in a read(2) of a pipe
// (readPipe), and measures each wait itself, on the monotonic clock.
//
//go:noinline
func (e *Endpoint) regeneratePhased(seq uint64, want Phases) (took Phases) {
	phasedCalls.Start(seq)
	defer phasedCalls.Stop(seq)

	t0 := time.Now()
	spin(want.CPU)
	took.CPU = time.Since(t0)

	held := make(chan struct{})
	go func() {
		e.mutex.Lock()
		close(held)
		time.Sleep(want.Mutex)
		e.mutex.Unlock()
	}()
	<-held
	took.Mutex = e.lockAlive()
	e.mutex.Unlock()

	done := make(chan struct{})
	go func() {
		time.Sleep(want.Chan)
		close(done)
	}()
	took.Chan = e.waitForProxyCompletions(done)

	var fds [2]int
	if err := syscall.Pipe(fds[:]); err != nil {
		panic(err)
	}
	go func() {
		time.Sleep(want.Syscall)
		syscall.Write(fds[1], []byte{1})
	}()
	took.Syscall = e.readPipe(fds[0])
	syscall.Close(fds[0])
	syscall.Close(fds[1])
	return took
}

// spin computes for d.
//
//go:noinline
func spin(d time.Duration) {
	x := uint64(1)
	for start := time.Now(); time.Since(start) < d; {
		for i := 0; i < 1000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	sink = x
}

var sink uint64

// lockAlive takes the endpoint's lock and returns how long it waited.
//
//go:noinline
func (e *Endpoint) lockAlive() time.Duration {
	t0 := time.Now()
	e.mutex.Lock()
	return time.Since(t0)
}

// waitForProxyCompletions waits until done is closed and returns how long.
//
//go:noinline
func (e *Endpoint) waitForProxyCompletions(done <-chan struct{}) time.Duration {
	t0 := time.Now()
	<-done
	return time.Since(t0)
}

// readPipe blocks in read(2) on fd, a blocking pipe, until a byte comes,
// and returns how long: syscall.Read is no netpoller wait.
//
//go:noinline
func (e *Endpoint) readPipe(fd int) time.Duration {
	var b [1]byte
	t0 := time.Now()
	for {
		if _, err := syscall.Read(fd, b[:]); err != syscall.EINTR {
			break
		}
	}
	return time.Since(t0)
}

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
// (readPipe). It reads the monotonic clock at its top and after each phase,
// so the phases it reports cover the whole call: what it does besides
// waiting (starting the goroutines that end the waits, which may take a
// new thread) counts as computing, as it is.
//
//go:noinline
func (e *Endpoint) regeneratePhased(seq uint64, want Phases) (took Phases) {
	phasedCalls.Start(seq)
	defer phasedCalls.Stop(seq)
	t0 := time.Now()

	var fds [2]int
	if err := syscall.Pipe(fds[:]); err != nil {
		panic(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	// Each helper ends its wait want.X after the phase before it ends.
	cpuDone, mutexDone, chanDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	held, proxies := make(chan struct{}), make(chan struct{})
	go func() {
		e.mutex.Lock()
		close(held)
		<-cpuDone
		time.Sleep(want.Mutex)
		e.mutex.Unlock()
	}()
	go func() {
		<-mutexDone
		time.Sleep(want.Chan)
		close(proxies)
	}()
	go func() {
		<-chanDone
		time.Sleep(want.Syscall)
		syscall.Write(fds[1], []byte{1})
	}()
	<-held

	spin(want.CPU - time.Since(t0))
	close(cpuDone)
	t1 := time.Now()
	e.lockAlive()
	e.mutex.Unlock()
	close(mutexDone)
	t2 := time.Now()
	e.waitForProxyCompletions(proxies)
	close(chanDone)
	t3 := time.Now()
	e.readPipe(fds[0])
	t4 := time.Now()
	return Phases{CPU: t1.Sub(t0), Mutex: t2.Sub(t1), Chan: t3.Sub(t2), Syscall: t4.Sub(t3)}
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

// lockAlive takes the endpoint's lock.
//
//go:noinline
func (e *Endpoint) lockAlive() {
	e.mutex.Lock()
}

// waitForProxyCompletions waits until done is closed.
//
//go:noinline
func (e *Endpoint) waitForProxyCompletions(done <-chan struct{}) {
	<-done
}

// readPipe blocks in read(2) on fd, a blocking pipe, until a byte comes:
// syscall.Read is no netpoller wait.
//
//go:noinline
func (e *Endpoint) readPipe(fd int) {
	var b [1]byte
	for {
		if _, err := syscall.Read(fd, b[:]); err != syscall.EINTR {
			return
		}
	}
}

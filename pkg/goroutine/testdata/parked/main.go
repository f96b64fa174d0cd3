// Command parked parks goroutines in known states for the tests of package
// goroutine, which build it with several Go toolchains: each goroutine
// prints its name, the address of its runtime.g, its goroutine ID as the
// runtime's own traceback numbers it, and the address of one of its locals,
// then blocks where a "// parks:" comment says, until stdin closes.
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// getg returns the address of the calling goroutine's runtime.g, from the
// register the Go ABI keeps it in (R14 on amd64, R28 on arm64).
func getg() uintptr

var (
	reports = make(chan string)
	exits   sync.WaitGroup
)

// report sends the calling goroutine's identity to main.
//
//go:noinline
func report(name string) {
	grow(64)
	var local int
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	// "goroutine 18 [running]:"
	f := bytes.Fields(buf)
	goid, err := strconv.ParseUint(string(f[1]), 10, 64)
	if err != nil {
		panic(err)
	}
	reports <- fmt.Sprintf("%s g=%#x goid=%d local=%#x", name, getg(), goid, uintptr(unsafe.Pointer(&local)))
}

// grow makes the calling goroutine's stack some 64 KB deep, so that nothing
// it does afterwards moves it: the address of a local it reports stays
// true.
//
//go:noinline
func grow(n int) byte {
	var pad [1024]byte
	pad[n%len(pad)] = byte(n)
	if n > 0 {
		return grow(n-1) + pad[n*7%len(pad)]
	}
	return pad[0]
}

var (
	mu   sync.Mutex
	rw   sync.RWMutex // held for writing: readers wait
	rw2  sync.RWMutex // held for reading: a writer waits
	cond = sync.NewCond(&sync.Mutex{})
	spun uint64
)

//go:noinline
func waitOnMutex() {
	report("mutex")
	mu.Lock() // parks: mutex
}

//go:noinline
func waitOnRLock() {
	report("rlock")
	rw.RLock() // parks: rlock
}

//go:noinline
func waitOnLock() {
	report("wlock")
	rw2.Lock() // parks: wlock
}

//go:noinline
func waitOnReceive(c chan int) {
	report("recv")
	<-c // parks: recv
}

//go:noinline
func waitOnSend(c chan int) {
	report("send")
	c <- 1 // parks: send
}

//go:noinline
func waitOnSelect(a, b chan int) {
	report("select")
	select { // parks: select
	case <-a:
	case <-b:
	}
}

//go:noinline
func sleepLong() {
	report("sleep")
	time.Sleep(time.Hour) // parks: sleep
}

//go:noinline
func waitOnCond() {
	report("cond")
	cond.L.Lock()
	cond.Wait() // parks: cond
}

// readPipe blocks in a read(2) of a pipe no one writes to: its descriptor
// is blocking and out of the network poller, so the goroutine stays in the
// system call.
//
//go:noinline
func readPipe(fd int) {
	report("syscall")
	var b [1]byte
	syscall.Read(fd, b[:]) // parks: syscall
}

// readPolled blocks reading a pipe through the network poller.
//
//go:noinline
func readPolled(f *os.File) {
	report("iowait")
	var b [1]byte
	f.Read(b[:]) // parks: iowait
}

//go:noinline
func spin() {
	report("spin")
	for { // parks: spin
		atomic.AddUint64(&spun, 1)
	}
}

//go:noinline
func exit() {
	defer exits.Done()
	report("exited")
}

func main() {
	// No garbage collection: it could shrink the stacks whose addresses
	// are printed.
	debug.SetGCPercent(-1)
	mu.Lock()
	rw.Lock()
	rw2.RLock()
	// A channel for each: a receiver and a sender on the same one would
	// pair up.
	recv, send, sel := make(chan int), make(chan int), make(chan int)
	var fds [2]int
	if err := syscall.Pipe(fds[:]); err != nil {
		panic(err)
	}
	pr, _, err := os.Pipe()
	if err != nil {
		panic(err)
	}
	exits.Add(1)
	starts := []func(){
		waitOnMutex, waitOnRLock, waitOnLock,
		func() { waitOnReceive(recv) },
		func() { waitOnSend(send) },
		func() { waitOnSelect(sel, sel) },
		sleepLong, waitOnCond,
		func() { readPipe(fds[0]) },
		func() { readPolled(pr) },
		spin, exit,
	}
	for _, start := range starts {
		go start()
		fmt.Println(<-reports)
	}
	exits.Wait()
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
}

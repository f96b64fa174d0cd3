// Command syscalls makes one cheap system call in a loop, inside one call
// of a function, and reports the time per syscall, measured around the loop
// only: the target of the syscall benchmark. It prints "ready pid=N",
// waits for a line on stdin (the probes are attached meanwhile), runs the
// loop and prints "result calls=N ns=ELAPSED sum=CHECKSUM".
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"
)

// loop is the traced function: n getppid(2) through syscall.Syscall, as Go
// makes its syscalls.
//
//go:noinline
func loop(n int) uint64 {
	var sum uint64
	for i := 0; i < n; i++ {
		r, _, _ := syscall.Syscall(syscall.SYS_GETPPID, 0, 0, 0)
		sum += uint64(r)
	}
	return sum
}

// idle is never called: tracing it follows the process's syscalls with no
// traced call in flight.
//
//go:noinline
func idle() {}

func main() {
	n := flag.Int("n", 1000, "syscalls")
	flag.Parse()
	fmt.Printf("ready pid=%d\n", os.Getpid())
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Fprintf(os.Stderr, "syscalls: waiting for start: %v\n", err)
		os.Exit(1)
	}
	if *n < 0 {
		idle()
	}
	start := time.Now()
	sum := loop(*n)
	elapsed := time.Since(start)
	fmt.Printf("result calls=%d ns=%d sum=%d\n", *n, elapsed.Nanoseconds(), sum)
}

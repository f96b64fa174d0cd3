// Command target is the program pkg/symbols tests build with several
// toolchains and flags and then read back.
//
// With TARGET_STACK=1 it prints the return addresses of a call made from an
// inlined method and how the runtime symbolizes them, then, with
// TARGET_SLEEP=1, waits to be killed so that its mappings can be read.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

type Endpoint struct {
	ID    uint16
	state string
	n     int
}

var wantStack = os.Getenv("TARGET_STACK") != ""

//go:noinline
func (e *Endpoint) regenerateBPF(rounds int) int {
	total := 0
	for i := 0; i < rounds; i++ {
		total += e.step(i)
	}
	if total%7 == 3 {
		return -1
	}
	return total
}

// step is small enough to be inlined into regenerateBPF.
func (e *Endpoint) step(i int) int {
	e.n += i
	if wantStack {
		printStack()
	}
	return e.n * 3
}

//go:noinline
func printStack() {
	wantStack = false
	pcs := make([]uintptr, 8)
	pcs = pcs[:runtime.Callers(2, pcs)]
	for _, pc := range pcs {
		fmt.Printf("pc %#x\n", pc)
	}
	frames := runtime.CallersFrames(pcs)
	for {
		fr, more := frames.Next()
		fmt.Printf("frame %s %d\n", fr.Function, fr.Line)
		if !more {
			break
		}
	}
	fmt.Println("end")
}

//go:noinline
func (e Endpoint) Name() string { return "ep" + strconv.Itoa(int(e.ID)) }

//go:noinline
func recurse(depth int) int {
	if depth <= 0 {
		return 0
	}
	return 1 + recurse(depth-1)
}

func main() {
	e := &Endpoint{ID: 7, state: "ready"}
	n := 1
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	fmt.Println(e.regenerateBPF(n), recurse(n), e.Name())
	if os.Getenv("TARGET_SLEEP") != "" {
		time.Sleep(time.Hour)
	}
}

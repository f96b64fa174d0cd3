// Command target is the program pkg/symbols tests build with several
// toolchains and flags and then read back.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

type Endpoint struct {
	ID    uint16
	state string
	n     int
}

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
	return e.n * 3
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

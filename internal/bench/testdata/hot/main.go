// Command hot calls one tiny function in a loop and reports the time per
// call, measured around the loop only: the target of the overhead
// benchmark. It prints "ready pid=N", waits for a line on stdin (the probes
// are attached meanwhile), runs the loop and prints
// "result calls=N ns=ELAPSED sum=CHECKSUM".
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"time"
)

type tuple struct {
	src, dst         uint32
	srcPort, dstPort uint16
}

type table struct {
	entries [256]uint64
}

// lookup is the probed function: a few nanoseconds untraced, so what the
// benchmark measures is the probes.
//
//go:noinline
func (t *table) lookup(k tuple) uint64 {
	h := (k.src ^ k.dst*31 ^ uint32(k.srcPort)<<16 ^ uint32(k.dstPort)) * 2654435761
	return t.entries[h>>24] + uint64(h)
}

func main() {
	n := flag.Int("n", 1000, "calls")
	flag.Parse()
	t := &table{}
	for i := range t.entries {
		t.entries[i] = uint64(i) * 1500
	}
	fmt.Printf("ready pid=%d\n", os.Getpid())
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Fprintf(os.Stderr, "hot: waiting for start: %v\n", err)
		os.Exit(1)
	}
	var sum uint64
	start := time.Now()
	for i := 0; i < *n; i++ {
		sum = sum*1099511628211 + t.lookup(tuple{src: 0x0a000000 | uint32(i), dst: 0x0a000001, srcPort: uint16(i), dstPort: 80})
	}
	elapsed := time.Since(start)
	fmt.Printf("result calls=%d ns=%d sum=%d\n", *n, elapsed.Nanoseconds(), sum)
}

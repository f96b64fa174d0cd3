// Command report prints the capacity model's tables for docs/capacity.md:
// go run ./internal/capacity/report. Flags replace the measured inputs.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/cilium-tracer/tracer/internal/capacity"
)

func main() {
	n := capacity.Measured
	flag.Float64Var(&n.Rate, "rate", n.Rate, "spans/s one daemon exports")
	flag.Float64Var(&n.Limit, "limit", n.Limit, "spans/s one daemon exports at most (budget / cost of a traced call)")
	flag.Float64Var(&n.WireBytes, "wire-bytes", n.WireBytes, "bytes per span on the wire")
	flag.Float64Var(&n.RawBytes, "raw-bytes", n.RawBytes, "bytes per span uncompressed")
	flag.IntVar(&n.BatchSize, "batch-size", n.BatchSize, "pipeline.batch_size")
	flag.DurationVar(&n.BatchTimeout, "batch-timeout", n.BatchTimeout, "pipeline.batch_timeout")
	flag.DurationVar(&n.StartJitter, "start-jitter", n.StartJitter, "jitter.start")
	flag.Parse()
	if n.Rate <= 0 || n.Limit <= 0 || n.BatchSize <= 0 || n.BatchTimeout <= 0 || n.StartJitter <= 0 {
		fmt.Fprintln(os.Stderr, "report: -rate, -limit, -batch-size, -batch-timeout and -start-jitter must be positive")
		os.Exit(2)
	}
	fmt.Print(capacity.Markdown(n, capacity.Published, capacity.Sizes...))
}

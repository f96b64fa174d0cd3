// Command tracer traces Go functions inside a running cilium-agent with
// uprobes and turns each call into an OpenTelemetry span.

// The runtime would read the CPU affinity and cgroup limit every second to
// adjust GOMAXPROCS: a wakeup that an idle daemon, held to 0.1% of a CPU,
// does not need. The value chosen at start stays.
//
//go:debug updatemaxprocs=0
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := &cobra.Command{
		Use:           "tracer",
		Short:         "Trace Go functions inside cilium-agent with uprobes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(symbolsCmd(), traceCmd(), presetsCmd(), targetsCmd(), offsetsCmd(), daemonCmd(), doctorCmd())
	if err := root.ExecuteContext(ctx); err != nil {
		// One line: operators grep logs and scripts read exit codes.
		fmt.Fprintln(os.Stderr, "tracer: "+strings.ReplaceAll(err.Error(), "\n", "; "))
		os.Exit(1)
	}
}

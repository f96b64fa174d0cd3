// Command agent stands in for cilium-agent in pkg/container's tests: a
// static binary that runs until it is told to stop, also as PID 1.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// As PID 1 of a container or PID namespace the kernel ignores signals
	// without a handler, so handle them to let docker stop us promptly.
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}

package torture

import "github.com/cilium/cilium/pkg/groundtruth"

// RecurseName is Recurse's symbol name.
const RecurseName = "github.com/cilium/cilium/pkg/torture.Recurse"

var recurseCalls *groundtruth.Counter

// Recurse calls itself until depth is 1. Its 512-byte frame outgrows a new
// goroutine's stack several times on the way down, so the prologues of
// some levels call morestack and run the entry again.
//
//go:noinline
func Recurse(depth int) byte {
	recurseCalls.Call()
	var pad [512]byte
	pad[depth%len(pad)] = byte(depth)
	if depth > 1 {
		pad[0] += Recurse(depth - 1)
	}
	return pad[depth%len(pad)] + pad[0]
}

// Recursions runs times recursions of depth levels, each on a new goroutine
// so each starts on a small stack.
func Recursions(times, depth int) {
	recurseCalls = groundtruth.New(RecurseName)
	for i := 0; i < times; i++ {
		done := make(chan struct{})
		go func() {
			defer close(done)
			Recurse(depth)
		}()
		<-done
	}
}

// Package loader compiles and loads the BPF programs of endpoints.
package loader

import (
	"time"

	"github.com/cilium/cilium/pkg/groundtruth"
)

var compileAndLoadCalls = groundtruth.New("github.com/cilium/cilium/pkg/datapath/loader.(*loader).compileAndLoad")

// compileDepth levels of compile, each with a frame of about 2 KiB, need
// more than 128 KiB of stack: a goroutine starting on 2 KiB copies its
// stack 7 times while compileAndLoad is in flight.
const compileDepth = 64

// Loader reloads the datapath of endpoints.
type Loader interface {
	// ReloadDatapath compiles and loads the programs of endpoint epID at
	// policy revision rev and returns a hash of the loaded programs.
	ReloadDatapath(epID uint16, rev uint64) uint64
}

type loader struct {
	compileSleep time.Duration
}

// NewLoader returns a loader whose compileAndLoad sleeps compileSleep after
// compiling.
func NewLoader(compileSleep time.Duration) Loader {
	return &loader{compileSleep: compileSleep}
}

func (l *loader) ReloadDatapath(epID uint16, rev uint64) uint64 {
	done := make(chan uint64, 1)
	// A new goroutine starts on the smallest stack whatever ran before, so
	// the stack growth inside compileAndLoad happens on every call.
	go func() {
		seq := groundtruth.Next()
		hash := l.compileAndLoad(seq, epID, rev)
		groundtruth.Returned(seq)
		done <- hash
	}()
	return <-done
}

// compileAndLoad grows (and so moves) its goroutine's stack in the middle
// of the call, then sleeps l.compileSleep and returns on the new stack. It
// measures each of its calls, numbered seq.
//
//go:noinline
func (l *loader) compileAndLoad(seq uint64, epID uint16, rev uint64) uint64 {
	compileAndLoadCalls.Start(seq)
	hash := compile(compileDepth, uint64(epID)<<32|rev)
	time.Sleep(l.compileSleep)
	compileAndLoadCalls.Stop(seq)
	return hash
}

// compile is not traced: it stands for the work that needs a deep stack.
//
//go:noinline
func compile(depth int, seed uint64) uint64 {
	var insns [128]uint64
	for i := range insns {
		insns[i] = seed*0x9e3779b97f4a7c15 + uint64(i)
	}
	if depth > 0 {
		insns[depth%len(insns)] ^= compile(depth-1, insns[seed%uint64(len(insns))])
	}
	var sum uint64
	for _, v := range insns {
		sum = sum*31 + v
	}
	return sum
}

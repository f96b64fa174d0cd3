package endpoint

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync/atomic"
	"time"

	"github.com/cilium/cilium/pkg/groundtruth"
	"github.com/cilium/cilium/pkg/maps/policymap"
)

var (
	regenerateBPFCalls         = groundtruth.New("github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF")
	syncPolicyMapWithDumpCalls = groundtruth.New("github.com/cilium/cilium/pkg/endpoint.(*Endpoint).syncPolicyMapWithDump")
)

// regenerateBPF sleeps ctx.bpfSleep, reloads the datapath (the loader's
// compileAndLoad runs meanwhile) and syncs the policy map. It returns the
// policy revision it realized and, every Owner.FailEvery-th call, one of
// the errors of failure.
//
//go:noinline
func (e *Endpoint) regenerateBPF(ctx *regenerationContext) (revnum uint64, reterr error) {
	regenerateBPFCalls.Call()
	time.Sleep(ctx.bpfSleep)
	e.owner.Loader.ReloadDatapath(e.ID, e.desiredPolicy.Revision)
	e.syncPolicyMapWithDump()
	return e.desiredPolicy.Revision, e.failure(ctx.seq)
}

// bpfCalls numbers the calls of regenerateBPF, for Owner.FailEvery.
var bpfCalls atomic.Uint64

var errDatapathNotReady = errors.New("datapath not ready")

// A compileError is an error type of the agent's own: the tracer can name
// its type, not read its message.
type compileError struct {
	endpoint uint16
	seq      uint64
}

func (c *compileError) Error() string {
	return fmt.Sprintf("compile datapath of endpoint %d (regeneration %d): clang exited 1", c.endpoint, c.seq)
}

// failure returns the error regeneration seq fails with, nil for most: the
// six kinds of error in turn, every Owner.FailEvery-th call.
func (e *Endpoint) failure(seq uint64) error {
	n := bpfCalls.Add(1)
	every := e.owner.FailEvery
	if every == 0 || n%every != 0 {
		return nil
	}
	switch (n / every) % 6 {
	case 1:
		return errDatapathNotReady
	case 2:
		return fmt.Errorf("reload datapath of endpoint %d (regeneration %d): %w", e.ID, seq, errDatapathNotReady)
	case 3:
		// A real *os.PathError, wrapping a syscall.Errno.
		_, err := os.Open(fmt.Sprintf("/nonexistent/cilium/state/%d/bpf_lxc.o", seq))
		return err
	case 4:
		return os.NewSyscallError("bpf", errors.ErrUnsupported)
	case 5:
		// A real *exec.ExitError: the agent itself, made to exit 3.
		return exec.Command("/proc/self/exe", "-exit-code", "3").Run()
	}
	return &compileError{endpoint: e.ID, seq: seq}
}

// syncPolicyMapWithDump dumps the endpoint's policy map, compares it with
// the desired policy and rewrites it when they differ. It returns how many
// entries differed.
//
//go:noinline
func (e *Endpoint) syncPolicyMapWithDump() int {
	syncPolicyMapWithDumpCalls.Call()
	current := e.policyMap.Dump()
	desired := make([]policymap.PolicyEntry, len(e.desiredPolicy.Rules))
	for i, id := range e.desiredPolicy.Rules {
		desired[i] = policymap.PolicyEntry{Identity: id, Packets: uint64(e.ID)}
	}
	diff := len(desired) - len(current)
	if diff < 0 {
		diff = -diff
	}
	for i := 0; i < len(current) && i < len(desired); i++ {
		if current[i] != desired[i] {
			diff++
		}
	}
	if diff > 0 {
		e.policyMap.Update(desired)
	}
	return diff
}
